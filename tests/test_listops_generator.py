"""The ListOps generator: LRA's algorithm and file format, deterministic for a seed."""

from __future__ import annotations

import csv
import random
import statistics
from collections import Counter
from pathlib import Path

import pytest

from data_prep.listops import ListOpsSpec, TreeSampler, generate, main

OPS = {"[MIN": min, "[MAX": max, "[MED": lambda xs: int(statistics.median(xs)), "[SM": lambda xs: sum(xs) % 10}


def evaluate(source: str) -> tuple[int, int, int, int]:
    """Independent evaluator of a parenthesised source: (value, counted length, depth, max args).

    Parses the token stream with a stack; parentheses are checked to balance.
    """
    stack: list[list] = []  # frames [op, args, depth]
    parens = 0
    length = depth = max_args = 0
    value = None
    for tok in source.split(" "):
        if tok == "(":
            parens += 1
        elif tok == ")":
            parens -= 1
            assert parens >= 0, "unbalanced parentheses"
        elif tok in OPS:
            length += 1
            stack.append([tok, [], len(stack) + 1])
            depth = max(depth, len(stack))
        elif tok == "]":
            length += 1
            op, args, _ = stack.pop()
            max_args = max(max_args, len(args))
            result = OPS[op](args)
            if stack:
                stack[-1][1].append(result)
            else:
                value = result
        else:
            length += 1
            digit = int(tok)
            assert 0 <= digit <= 9
            if stack:
                stack[-1][1].append(digit)
                depth = max(depth, len(stack) + 1)
            else:
                value = digit
    assert parens == 0 and not stack
    return value, length, depth, max_args


def read_rows(path: Path) -> list[tuple[str, int]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["Source", "Target"]
    return [(s, int(t)) for s, t in rows[1:]]


def test_same_seed_gives_byte_identical_files_whatever_the_worker_count(tmp_path: Path) -> None:
    counts = {"train": 300, "val": 50, "test": 50}
    spec = ListOpsSpec(min_length=20, max_length=200, max_depth=6)
    a = generate(tmp_path / "a", counts, seed=7, spec=spec, workers=1, progress=False)
    b = generate(tmp_path / "b", counts, seed=7, spec=spec, workers=2, progress=False)
    c = generate(tmp_path / "c", counts, seed=8, spec=spec, workers=1, progress=False)
    for split in counts:
        assert a[split].read_bytes() == b[split].read_bytes()
    assert a["train"].read_bytes() != c["train"].read_bytes()


def test_files_are_written_like_the_release(tmp_path: Path) -> None:
    paths = generate(tmp_path, {"train": 20, "val": 5, "test": 5}, seed=0, spec=ListOpsSpec(min_length=5, max_length=40), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]
    raw = paths["val"].read_bytes()
    assert raw.startswith(b"Source\tTarget\r\n")  # csv.writer(delimiter='\t') as in LRA's listops.py
    lines = raw.split(b"\r\n")
    assert lines[-1] == b"" and len(lines) == 5 + 2
    source, target = lines[1].decode().split("\t")
    assert source.startswith("( ") and source.endswith(" ] )") and target.isdigit()
    assert [len(read_rows(p)) for p in paths.values()] == [20, 5, 5]


def test_rows_respect_bounds_and_labels_match_an_independent_evaluator(tmp_path: Path) -> None:
    spec = ListOpsSpec(max_depth=5, max_args=4, min_length=30, max_length=120)
    paths = generate(tmp_path, {"train": 400, "val": 50, "test": 50}, seed=3, spec=spec, progress=False)
    sources = set()
    for path in paths.values():
        for source, label in read_rows(path):
            value, length, depth, max_args = evaluate(source)
            assert value == label
            assert spec.min_length < length < spec.max_length
            assert depth <= spec.max_depth  # operators at depths 1..max_depth-1, leaves up to max_depth
            assert 2 <= max_args <= spec.max_args
            sources.add(source)
    assert len(sources) == 500, "rows must be unique across all splits"


def test_default_distribution_matches_the_published_label_skew() -> None:
    """LRA's algorithm at its defaults: ~17% label 0, ~17% label 9, ~8% each for 1-8 (lra_data.md §3)."""
    sampler = TreeSampler(random.Random(11), ListOpsSpec())
    labels: Counter[int] = Counter()
    lengths = []
    drawn = 0
    while sum(labels.values()) < 1500:
        drawn += 1
        row = sampler.sample()
        if row is not None:
            value, length, _, _ = evaluate(row[0])
            assert value == row[1]
            labels[row[1]] += 1
            lengths.append(length)
    n = sum(labels.values())
    assert 0.13 < labels[0] / n < 0.21 and 0.13 < labels[9] / n < 0.21
    assert all(0.05 < labels[d] / n < 0.12 for d in range(1, 9))
    assert min(lengths) > 500 and max(lengths) < 2000
    assert 950 < statistics.mean(lengths) < 1150  # published ~1064
    assert 0.06 < n / drawn < 0.11  # published acceptance rate 8.2%


def test_median_is_the_floor_of_the_middle_pair_mean(tmp_path: Path) -> None:
    assert evaluate("( ( ( ( ( [MED 3 ) 8 ) 1 ) 6 ) ] )")[0] == 4  # sorted 1 3 6 8 -> (3+6)/2 = 4.5 -> 4
    spec = ListOpsSpec(max_depth=2, max_args=4, min_length=3, max_length=7)
    paths = generate(tmp_path, {"train": 200, "val": 0, "test": 0}, seed=1, spec=spec, progress=False)
    med_rows = [(s, t) for s, t in read_rows(paths["train"]) if "[MED" in s]
    assert med_rows
    for source, label in med_rows:
        digits = sorted(int(t) for t in source.split() if t.isdigit())
        assert label == int(statistics.median(digits))


def test_cli_rejects_an_empty_length_range(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--out-dir", str(tmp_path), "--min-length", "10", "--max-length", "11", "--quiet"]) == 2
    assert "--min-length 10 and --max-length 11" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_writes_counts_and_reports(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = ["--out-dir", str(tmp_path), "--train", "8", "--val", "2", "--test", "2", "--min-length", "5",
            "--max-length", "50", "--max-depth", "4", "--max-args", "3", "--seed", "5", "--workers", "1", "--quiet"]
    assert main(args) == 0
    assert "wrote 8 train, 2 val, 2 test rows" in capsys.readouterr().out
    rows = read_rows(tmp_path / "basic_train.tsv")
    assert len(rows) == 8 and all(evaluate(s)[3] <= 3 for s, _ in rows)


GENERATORS = {  # (long first run, quick second run with another seed, the folder locked)
    "listops": (["data_prep.listops", "--train", "2000000", "--val", "0", "--test", "0", "--seed", "1", "--workers", "1"],
                ["data_prep.listops", "--train", "40", "--val", "10", "--test", "10", "--seed", "2", "--max-length", "100",
                 "--min-length", "10", "--max-depth", "3"], ""),
    "pathfinder": (["data_prep.pathfinder", "--num-images", "200000", "--seed", "1", "--workers", "1"],
                   ["data_prep.pathfinder", "--num-images", "4", "--seed", "2", "--workers", "1"],
                   "pathfinder32/curv_contour_length_14"),
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_a_second_generator_on_the_same_folder_is_refused_naming_the_first(name: str, tmp_path: Path) -> None:
    """Two generators writing one --out-dir would blend their rows (ListOps' shared .partial files) or mix one
    seed's PNGs with the other's metadata (Pathfinder): the second stops with one line naming the first, and
    runs once the first is gone."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    first_args, second_args, sub = GENERATORS[name]
    out = tmp_path / "out"
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])}
    first = subprocess.Popen([sys.executable, "-m", *first_args, "--out-dir", str(out), "--quiet"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = out / sub / ".lock"
        for _ in range(600):  # the first holds the folder's lock (its record names it)
            if lock.is_file() and lock.read_text() and json.loads(lock.read_text()).get("pid") == first.pid:
                break
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", *second_args, "--out-dir", str(out), "--quiet"], env=env,
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-2000:]
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith(f"data_prep.{name}: {out / sub if sub else out} is being written by pid {first.pid}")
        assert "another --out-dir" in line
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    again = subprocess.run([sys.executable, "-m", *second_args, "--out-dir", str(out), "--quiet"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
