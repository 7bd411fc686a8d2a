"""The Pathfinder generator: faithful to snakes2 (labels, strokes, paddles, intensities), deterministic, release layout."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.pathfinder import DIFFICULTIES, SnakeDrawer, dilate, disk, generate, main, params_for
from lra_bench.data.pathfinder import PathfinderDataModule


def components(mask: np.ndarray) -> np.ndarray:
    """8-connected component labels (0 = background)."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    h, w = mask.shape
    current = 0
    for y, x in zip(*np.nonzero(mask)):
        if labels[y, x]:
            continue
        current += 1
        stack = [(y, x)]
        labels[y, x] = current
        while stack:
            a, b = stack.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    c, d = a + dy, b + dx
                    if 0 <= c < h and 0 <= d < w and mask[c, d] and not labels[c, d]:
                        labels[c, d] = current
                        stack.append((c, d))
    return labels


@pytest.fixture(scope="module")
def samples32() -> list:
    drawer = SnakeDrawer(params_for(32, "curv_contour_length_14"), random.Random(2024))
    return [drawer.sample() for _ in range(160)]


def test_labels_are_balanced(samples32: list) -> None:
    assert 0.4 < np.mean([s.label for s in samples32]) < 0.6


def test_markers_lie_on_one_stroke_for_label_1_and_on_two_for_label_0(samples32: list) -> None:
    """A stroke is a target snake's pixels with the gaps between paddles (2 x margin) bridged."""
    for s in samples32:
        strokes = [components(dilate((snake > 0).astype(float), disk(s.margin)) > 0) for snake in s.snakes]
        assert all(st.max() == 1 for st in strokes), "each target snake is one stroke"
        origin, terminal = s.origins[s.origin_snake], s.terminals[s.terminal_snake]
        assert s.snakes[s.origin_snake][origin] > 0 and s.snakes[s.terminal_snake][terminal] > 0
        if s.label == 1:
            assert s.origin_snake == s.terminal_snake  # both ends of the same stroke
        else:
            assert s.origin_snake != s.terminal_snake
        assert s.image[origin] >= 200 and s.image[terminal] >= 200  # the marker disks are bright


@pytest.mark.parametrize("difficulty", list(DIFFICULTIES))
def test_each_target_path_has_the_difficultys_paddle_count(difficulty: str) -> None:
    params = params_for(32, difficulty)
    drawer = SnakeDrawer(params, random.Random(7))
    for _ in range(4):
        s = drawer.sample()
        for k, starts in enumerate(s.paddles):
            assert len(starts) == DIFFICULTIES[difficulty] == params.contour_length
            step = params.paddle_length + s.margin  # a head lies on the circle of radius L + m around its pivot
            for a, b in zip(starts[1:], starts[2:]):
                assert math.dist(a, b) <= 2 * (step + 2) and s.snakes[k][b] > 0


def test_intensity_statistics_match_the_original_at_32px(samples32: list) -> None:
    """The original snakes2 generator (drewlinsley/pathfinder), 300 images measured once: mean 20.3 +- 2.3, non-zero fraction 0.345 +- 0.040,
    about 1.26 of 5 distractor snakes placed."""
    images = np.stack([s.image for s in samples32]).reshape(len(samples32), -1).astype(float)
    means, nonzero = images.mean(1), (images > 0).mean(1)
    assert 19.5 < means.mean() < 21.1 and 1.5 < means.std() < 3.2
    assert 0.33 < nonzero.mean() < 0.36 and 0.025 < nonzero.std() < 0.055
    assert 1.0 < np.mean([s.distractors for s in samples32]) < 1.55
    assert all(s.image.max() == 255 for s in samples32)


def test_intensity_statistics_match_the_original_at_128px() -> None:
    """Original at 128px: mean 8.0 +- 0.3, non-zero 0.139 +- 0.004, ~7.8 of 8 distractors, paths peak at 229."""
    drawer = SnakeDrawer(params_for(128, "curv_contour_length_14"), random.Random(5))
    samples = [drawer.sample() for _ in range(6)]
    images = np.stack([s.image for s in samples]).reshape(6, -1).astype(float)
    assert 7.3 < images.mean(1).mean() < 8.7 and 0.128 < (images > 0).mean(1).mean() < 0.150
    assert np.mean([s.distractors for s in samples]) > 6.5
    for s in samples:
        away = np.ones(s.image.shape, bool)
        for y, x in (s.origins[s.origin_snake], s.terminals[s.terminal_snake]):
            away[max(0, y - 5) : y + 6, max(0, x - 5) : x + 6] = False
        on_path = (np.maximum(*s.snakes) > 0) & away
        assert s.image[on_path].max() == 229  # 0.9 contrast against markers at 1.0: int(0.9 * 255 + 0.4999)


def test_output_is_deterministic_for_a_seed_whatever_the_workers(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", 32, "curv_baseline", 24, seed=3, workers=1, images_per_batch=8, progress=False)
    generate(tmp_path / "b", 32, "curv_baseline", 24, seed=3, workers=2, images_per_batch=8, progress=False)
    generate(tmp_path / "c", 32, "curv_baseline", 24, seed=4, workers=1, images_per_batch=8, progress=False)
    assert a["images"] == 24
    root = Path("pathfinder32") / "curv_baseline"
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 24 + 3
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a" / root / "imgs/0/sample_0.png").read_bytes() != (tmp_path / "c" / root / "imgs/0/sample_0.png").read_bytes()


def test_release_layout_is_read_back_by_the_datamodule(tmp_path: Path) -> None:
    generate(tmp_path, 32, "curv_contour_length_14", 30, seed=1, images_per_batch=10, progress=False)
    base = tmp_path / "pathfinder32" / "curv_contour_length_14"
    line = (base / "metadata" / "2.npy").read_text().splitlines()[3].split(" ")
    assert line[:3] == ["imgs/2", "sample_3.png", "3"] and line[4:] == ["1.0", "14", "4", "2", "0.5", "1", "1"]
    with Image.open(base / "imgs/2/sample_3.png") as im:
        assert im.mode == "L" and im.size == (32, 32)
    dm = PathfinderDataModule(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), batch_size=8, decode_workers=1)
    dm.setup()
    assert sum(len(d) for d in dm.datasets.values()) == 30
    stored = np.concatenate([dm.datasets[s].labels for s in ("train", "val", "test")])
    labels = [int(l.split()[3]) for k in range(3) for l in (base / "metadata" / f"{k}.npy").read_text().splitlines()]
    assert sorted(stored.tolist()) == sorted(labels)


def test_cli_reports_and_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out-dir", str(tmp_path), "--resolution", "32", "--num-images", "4", "--difficulty", "curv_baseline",
                 "--workers", "1", "--quiet"]) == 0
    assert "wrote 4 images" in capsys.readouterr().out
    assert main(["--out-dir", str(tmp_path), "--num-images", "0", "--quiet"]) == 2
    with pytest.raises(SystemExit):
        main(["--out-dir", str(tmp_path), "--resolution", "48", "--num-images", "4"])
