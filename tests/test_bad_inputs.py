"""The bad-input corpus: malformed files, rows, images, labels, options, presets and overrides across all tasks.

Each case sets up one fault in a fresh data root and asserts the one clear message that names the file (and
line) or option and the fix, or the counted skip where the official data is known to contain the fault.
A few go through the command line to check that the user sees one line and no traceback.
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import HydraException
from hydra.utils import instantiate
from PIL import Image

from data_prep import listops as listops_gen
from data_prep import pathfinder as pathfinder_gen
from lra_bench.config import PROJECT_ROOT, check_names
from lra_bench.data.image import CIFAR10DataModule
from lra_bench.data.listops import ListOpsDataModule
from lra_bench.data.pathfinder import PathfinderDataModule
from lra_bench.data.retrieval import AANDataModule
from lra_bench.data.text import IMDBDataModule
from lra_bench.errors import ConfigError, DataError
from tests.conftest import compose_config
from tests.fixtures import RELEASE, write_aan, write_aclimdb, write_cifar_batches, write_pathfinder_tree


@dataclass
class Case:
    name: str
    setup: Callable[[Path], None]  # writes the (broken) data under the root
    run: Callable[[Path], object]  # the action that must fail (or skip)
    error: type[BaseException] | None
    message: str  # regex the message must match (or, with error=None, the skip the log must report)


def kw(root: Path) -> dict:
    return {"data_dir": str(root), "cache_dir": str(root / "cache"), "batch_size": 4, "num_workers": 0}


def listops_tree(root: Path, rows: list[str] | None = None, header: str = "Source\tTarget") -> None:
    folder = root / RELEASE / "listops-1000"
    listops_gen.generate(folder, {"train": 8, "val": 4, "test": 4}, seed=0,
                         spec=listops_gen.ListOpsSpec(max_depth=3, max_args=3, min_length=3, max_length=30), progress=False)
    if rows is not None:
        (folder / "basic_train.tsv").write_text("\r\n".join([header, *rows]) + "\r\n")


def aan_line(root: Path, line: str) -> None:
    folder = write_aan(root)
    first = (folder / "new_aan_pairs.train.tsv").read_text(encoding="utf-8").splitlines()[0]
    (folder / "new_aan_pairs.train.tsv").write_text(first + "\n" + line + "\n", encoding="utf-8")


def damage_pf(root: Path, fn: Callable[[Path], None]) -> None:
    fn(write_pathfinder_tree(root, per_batch=4, batches=2, empty=None))


def damage_cifar(root: Path, payload: bytes) -> None:
    (write_cifar_batches(root) / "data_batch_2").write_bytes(payload)


def setup_dm(cls, **options):
    return lambda root: cls(**kw(root), **options).setup()


LISTOPS = setup_dm(ListOpsDataModule)
AAN = setup_dm(AANDataModule)
IMDB = setup_dm(IMDBDataModule)
CIFAR = setup_dm(CIFAR10DataModule, val_size=8)
PF = setup_dm(PathfinderDataModule, decode_workers=1)
PF_PNG = "imgs/1/sample_2.png"

CASES = [
    # --- ListOps files and rows
    Case("listops-no-data-root", lambda r: None, lambda r: ListOpsDataModule(**kw(r / "missing")).setup(), DataError,
         r"data root .*missing does not exist.*paths.data_dir"),
    Case("listops-no-folder", lambda r: r.mkdir(exist_ok=True), LISTOPS, DataError,
         r"no listops-1000/ with basic_train.tsv.*within 3 levels below .*python -m data_prep.listops"),
    Case("listops-partial-folder", lambda r: (r / "listops-1000").mkdir(parents=True) or (r / "listops-1000/basic_train.tsv").write_text("x"),
         LISTOPS, DataError, r"lacks basic_val.tsv, basic_test.tsv"),
    Case("listops-bad-header", lambda r: listops_tree(r, ["[MIN 1 ]\t1"], header="Source,Target"), LISTOPS, DataError,
         r"basic_train.tsv:1: expected the header 'Source<TAB>Target'"),
    Case("listops-one-field", lambda r: listops_tree(r, ["[MIN 1 ]\t1", "[MAX 2 ]"]), LISTOPS, DataError,
         r"basic_train.tsv:3: expected 2 tab-separated fields"),
    Case("listops-label-10", lambda r: listops_tree(r, ["[MIN 1 ]\t10"]), LISTOPS, DataError,
         r"basic_train.tsv:2: label '10' is not an integer in 0..9"),
    Case("listops-label-text", lambda r: listops_tree(r, ["[MIN 1 ]\tseven"]), LISTOPS, DataError,
         r"basic_train.tsv:2: label 'seven'"),
    Case("listops-unknown-token", lambda r: listops_tree(r, ["( ( [FIRST 1 ) 2 ] )\t1"]), LISTOPS, DataError,
         r"basic_train.tsv:2: unknown token"),
    Case("listops-empty-file", lambda r: listops_tree(r, []), LISTOPS, DataError, r"basic_train.tsv: no rows after the header"),
    # --- Retrieval rows
    Case("aan-four-fields", lambda r: aan_line(r, "1.0\tA\tB\tonly four"), AAN, DataError,
         r"new_aan_pairs.train.tsv:2: expected 5 tab-separated fields"),
    Case("aan-label-2", lambda r: aan_line(r, "2.0\tA\tB\tx\ty"), AAN, DataError, r"new_aan_pairs.train.tsv:2: label 2 is out of range"),
    Case("aan-label-text", lambda r: aan_line(r, "yes\tA\tB\tx\ty"), AAN, DataError, r"new_aan_pairs.train.tsv:2: label b'yes' is not a number"),
    Case("aan-missing", lambda r: r.mkdir(exist_ok=True), AAN, DataError, r"no tsv_data/ .*lra_release.gz"),
    Case("aan-bad-utf8-chars", lambda r: aan_line(r, "1.0\tA\tB\t\xff\xfe text\ty"), setup_dm(AANDataModule, tokenizer="chars"),
         None, ""),  # placeholder, replaced below by a binary write
    # --- Text (IMDB)
    Case("imdb-no-neg", lambda r: write_aclimdb(r) and shutil.rmtree(r / "aclImdb/train/neg"), setup_dm(IMDBDataModule, source="folder"),
         DataError, r"aclImdb/train/neg is missing"),
    Case("imdb-bad-utf8", lambda r: write_aclimdb(r) and (r / "aclImdb/test/pos/0_7.txt").write_bytes(b"\xff\xfe broken"), IMDB,
         DataError, r"0_7.txt: not valid UTF-8"),
    Case("imdb-no-source", lambda r: r.mkdir(exist_ok=True), IMDB, DataError, r"aclImdb_v1.tar.gz"),
    # --- Image (CIFAR-10 pickles)
    Case("cifar-truncated", lambda r: damage_cifar(r, b"\x80\x02}q\x00"), CIFAR, DataError,
         r"data_batch_2: not a CIFAR-10 python batch"),
    Case("cifar-label-12", lambda r: damage_cifar(r, pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 12]})),
         CIFAR, DataError, r"data_batch_2: labels must be 0..9"),
    Case("cifar-wrong-shape", lambda r: damage_cifar(r, pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [1, 2]})),
         CIFAR, DataError, r"expected data of shape \(n, 3072\)"),
    # --- Pathfinder images and metadata
    Case("pf-rgb", lambda r: damage_pf(r, lambda b: Image.new("RGB", (32, 32)).save(b / PF_PNG)), PF, DataError,
         r"sample_2.png: mode RGB, expected an 8-bit grayscale"),
    Case("pf-wrong-size", lambda r: damage_pf(r, lambda b: Image.new("L", (32, 16)).save(b / PF_PNG)), PF, DataError,
         r"sample_2.png: size 32x16, expected 32x32"),
    Case("pf-truncated-png", lambda r: damage_pf(r, lambda b: (b / PF_PNG).write_bytes((b / PF_PNG).read_bytes()[:50])), PF, DataError,
         r"sample_2.png: cannot decode the PNG"),
    Case("pf-missing-png", lambda r: damage_pf(r, lambda b: (b / PF_PNG).unlink()), PF, DataError, r"1.npy:3: image .*sample_2.png is missing"),
    Case("pf-label-7", lambda r: damage_pf(r, lambda b: (b / "metadata/1.npy").write_text("imgs/1 sample_0.png 0 7 1.0\n")), PF,
         DataError, r"1.npy:1: label '7' is not 0 or 1"),
    Case("pf-short-row", lambda r: damage_pf(r, lambda b: (b / "metadata/0.npy").write_text("imgs/0 sample_0.png\n")), PF,
         DataError, r"0.npy:1: expected at least 4 fields"),
    Case("pf-no-difficulty", lambda r: write_pathfinder_tree(r, difficulty="curv_baseline", per_batch=2, batches=1, empty=None), PF,
         DataError, r"curv_contour_length_14/metadata/ is missing"),
    Case("pf-empty-png-is-skipped", lambda r: write_pathfinder_tree(r, per_batch=10, batches=2, empty=(1, 4)), PF, None,
         r"skipped 1 empty image file"),
    # --- options
    Case("cifar-train-smaller-than-holdout", write_cifar_batches, setup_dm(CIFAR10DataModule), DataError,
         r"cifar-10-batches-py: the train split has \d+ images, so a validation hold-out of task.datamodule.val_size=5000"),
    Case("opt-val-source", lambda r: None, lambda r: IMDBDataModule(**kw(r), val_source="dev"), ConfigError, r"val_source must be test or train_holdout"),
    Case("opt-tokenizer", lambda r: None, lambda r: AANDataModule(**kw(r), tokenizer="words"), ConfigError, r"tokenizer must be bytes or chars"),
    Case("opt-cifar-val-split", lambda r: None, lambda r: CIFAR10DataModule(**kw(r), val_split="first"), ConfigError, r"val_split must be last"),
    Case("opt-pf-split", lambda r: None, lambda r: PathfinderDataModule(**kw(r), split="shuffled"), ConfigError, r"split must be random"),
    Case("opt-pf-resolution", lambda r: None, lambda r: PathfinderDataModule(**kw(r), resolution=48), ConfigError, r"resolution must be one of"),
    # --- presets and overrides
    Case("preset-unknown-experiment", lambda r: None, lambda r: compose_config(["experiment=lra/mega-sudoku"]), HydraException,
         r"Could not find 'experiment/lra/mega-sudoku'.*Available options in 'experiment'"),
    Case("preset-unknown-model", lambda r: None, lambda r: compose_config(["model=rwkv"]), HydraException,
         r"Could not find 'model/rwkv'.*Available options in 'model'"),
    Case("override-missing-key", lambda r: None, lambda r: compose_config(["model.net.backbone.n_expertz=4"]), HydraException,
         r"Could not override 'model.net.backbone.n_expertz'.*\+model.net.backbone.n_expertz"),
    Case("override-bad-pooling", lambda r: None, lambda r: instantiate(compose_config(["model.net.pooling=max"]).model.net), Exception,
         r"pooling must be one of"),
    Case("override-bad-attention", lambda r: None,
         lambda r: instantiate(compose_config(["model=mega", "model.net.backbone.attention=cosine"]).model.net), Exception,
         r"attention must be one of"),
    Case("override-bad-norm", lambda r: None,
         lambda r: instantiate(compose_config(["model=mega", "model.net.backbone.norm=groupnorm"]).model.net), Exception, r"norm must be one of"),
    Case("override-bad-s4-mode", lambda r: None,
         lambda r: instantiate(compose_config(["model=s4", "model.net.backbone.mode=dense"]).model.net), Exception, r"mode must be dplr"),
    Case("override-n-ssm", lambda r: None,
         lambda r: instantiate(compose_config(["model=s4", "model.net.backbone.n_ssm=3"]).model.net), Exception, r"not a multiple of n_ssm=3"),
    Case("task-name-mismatch", lambda r: None, lambda r: check_names(compose_config(["task.name=imdb"])), ConfigError,
         r"unknown task 'imdb'; valid tasks: image, listops, pathfinder, pathx, retrieval, text"),
    # --- generators
    Case("gen-listops-range", lambda r: None, lambda r: listops_gen.main(["--out-dir", str(r), "--min-length", "9", "--max-length", "10"]),
         SystemExit, r"2"),
    Case("gen-pathfinder-count", lambda r: None, lambda r: pathfinder_gen.main(["--out-dir", str(r), "--num-images", "0", "--quiet"]),
         SystemExit, r"2"),
]
def listops_bytes(root: Path, data: bytes) -> None:
    listops_tree(root)
    (root / RELEASE / "listops-1000" / "basic_train.tsv").write_bytes(data)


def exit_code(fn) -> int | None:
    try:
        fn()
    except SystemExit as e:
        return e.code
    return None


def options(*overrides: str):
    from lra_bench.training.options import check_options

    return lambda r: check_options(compose_config(list(overrides)))


def strange_imdb_name(root: Path) -> None:
    write_aclimdb(root)
    (root / "aclImdb" / "train" / "pos" / "review.txt").write_text("named like no release file")


CASES += [
    # --- issue 16: the rest of the bad inputs
    Case("listops-utf16", lambda r: listops_bytes(r, "Source\tTarget\r\n[MIN 1 ]\t1\r\n".encode("utf-16")), LISTOPS,
         DataError, r"basic_train.tsv: not UTF-8 text \(UTF-16 or binary\)"),
    Case("listops-binary", lambda r: listops_bytes(r, bytes(range(256)) * 4), LISTOPS, DataError,
         r"basic_train.tsv: not UTF-8 text \(UTF-16 or binary\)"),
    Case("listops-bad-utf8", lambda r: listops_bytes(r, b"Source\tTarget\r\n[MIN 1 \xff]\t1\r\n"), LISTOPS, DataError,
         r"basic_train.tsv: not UTF-8 text at byte \d+"),
    Case("listops-label-superscript", lambda r: listops_tree(r, ["[MIN 1 ]\t²"]), LISTOPS, DataError,
         r"basic_train.tsv:2: label '²' is not an integer in 0..9"),
    Case("listops-truncated-rows", lambda r: listops_tree(r), setup_dm(ListOpsDataModule, max_length=2), None,
         r"basic_train.tsv: 8 of 8 rows are longer than task.max_length=2 tokens and were truncated \(every row"),
    Case("aan-label-inf", lambda r: aan_line(r, "inf\tA\tB\tx\ty"), AAN, DataError,
         r"new_aan_pairs.train.tsv:2: label inf is out of range"),
    Case("cifar-missing-batch", lambda r: write_cifar_batches(r) and (r / RELEASE / "cifar-10-batches-py" / "data_batch_5").unlink()
         if (r / RELEASE / "cifar-10-batches-py").exists() else (write_cifar_batches(r) / "data_batch_5").unlink(),
         CIFAR, DataError, r"cifar-10-batches-py, but it lacks data_batch_5"),
    Case("imdb-strange-file-name", strange_imdb_name, IMDB, None,
         r"train/pos: 1 file\(s\) not named <id>_<rating>.txt were not read: review.txt"),
    Case("opt-batch-size-0", lambda r: None, options("task.batch_size=0"), ConfigError, r"task.batch_size=0: must be an integer >= 1"),
    Case("opt-lr-0", lambda r: None, options("optimizer.lr=0"), ConfigError, r"optimizer.lr=0: must be a number > 0"),
    Case("opt-lr-negative", lambda r: None, options("optimizer.lr=-0.001"), ConfigError, r"optimizer.lr=-0.001: must be a number > 0"),
    Case("opt-accumulate-0", lambda r: None, options("trainer.accumulate_grad_batches=0"), ConfigError,
         r"trainer.accumulate_grad_batches=0: must be an integer >= 1"),
    Case("opt-workers-negative", lambda r: None, options("task.datamodule.num_workers=-1"), ConfigError,
         r"task.datamodule.num_workers=-1: must be an integer >= 0"),
    Case("opt-seed-negative", lambda r: None, options("seed=-1"), ConfigError, r"seed=-1: must be an integer in 0 .. 2\^32 - 1"),
    Case("opt-decay-unknown", lambda r: None, options("scheduler.decay=foo"), ConfigError,
         r"scheduler.decay='foo': must be one of linear, cosine, constant, rsqrt"),
    Case("opt-max-steps-0", lambda r: None, options("trainer.max_steps=0"), ConfigError,
         r"trainer.max_steps=0: trains nothing \(and would record a finished run\)"),
    Case("opt-betas-one", lambda r: None, options("optimizer.betas=[0.9]"), ConfigError,
         r"optimizer.betas=\[0.9\]: must be two numbers in \[0, 1\), e.g. \[0.9, 0.999\]"),
    Case("opt-betas-1", lambda r: None, options("optimizer.betas=[0.9,1.0]"), ConfigError, r"optimizer.betas=\[0.9, 1.0\]: must be two numbers"),
    Case("opt-eps-0", lambda r: None, options("optimizer.eps=0"), ConfigError, r"optimizer.eps=0: must be a number > 0 and finite"),
    Case("opt-lr-inf", lambda r: None, options("optimizer.lr=inf"), ConfigError, r"optimizer.lr=inf: must be a number > 0 and finite"),
    Case("opt-weight-decay-inf", lambda r: None, options("optimizer.weight_decay=inf"), ConfigError,
         r"optimizer.weight_decay=inf: must be a number >= 0 and finite"),
    Case("opt-max-steps-negative", lambda r: None, options("trainer.max_steps=-5"), ConfigError,
         r"trainer.max_steps=-5: must be an integer > 0, or -1"),
    Case("opt-max-epochs-text", lambda r: None, options("trainer.max_epochs=ten"), ConfigError,
         r"trainer.max_epochs='ten': must be an integer > 0, or -1"),
    Case("opt-max-time-text", lambda r: None, options("trainer.max_time=abc"), ConfigError,
         r"trainer.max_time='abc': must be null or a positive duration"),
    Case("opt-max-time-negative", lambda r: None, options("trainer.max_time={hours:-1}"), ConfigError,
         r"trainer.max_time=.*must be null or a positive duration"),
    Case("opt-chance-fraction-2", lambda r: None, options("chance.fraction=2"), ConfigError,
         r"chance.fraction=2: must be a number in \(0, 1\]"),
    Case("opt-chance-z-negative", lambda r: None, options("chance.z=-1"), ConfigError, r"chance.z=-1: must be a number >= 0"),
    Case("opt-on-chance-unknown", lambda r: None, options("on_chance=foo"), ConfigError, r"on_chance='foo': must be one of warn, stop"),
    Case("opt-on-nonfinite-unknown", lambda r: None, options("on_nonfinite=foo"), ConfigError,
         r"on_nonfinite='foo': must be one of stop, skip"),
    Case("opt-val-check-interval-0", lambda r: None, options("trainer.val_check_interval=0"), ConfigError,
         r"trainer.val_check_interval=0: must be null, an integer >= 1"),
    Case("opt-warmup-both", lambda r: None, options("experiment=quick", "scheduler.warmup_steps=100"), ConfigError,
         r"scheduler.warmup_steps=100: and scheduler.warmup_fraction=0.05 are both set; set only one"),
    Case("opt-limit-train-batches-0", lambda r: None, options("trainer.limit_train_batches=0"), ConfigError,
         r"trainer.limit_train_batches=0: trains nothing"),
    Case("opt-gradient-clip-negative", lambda r: None, options("trainer.gradient_clip_val=-1"), ConfigError,
         r"trainer.gradient_clip_val=-1: must be null or a number >= 0"),
    Case("opt-precision-unknown", lambda r: None, options("trainer.precision=13"), ConfigError,
         r"trainer.precision=13: must be one of .*bf16-mixed"),
    Case("opt-compile-unknown-backend", lambda r: None, options("compile=banana"), ConfigError,
         r"compile='banana': must be true \(inductor\), false, or a torch.compile backend: aot_eager, .*inductor"),
    Case("opt-compile-1", lambda r: None, options("compile=1"), ConfigError, r"compile=1: must be true \(inductor\), false"),
    Case("opt-compile-yes", lambda r: None, options("compile=yes"), ConfigError, r"compile='yes': must be true \(inductor\)"),
    Case("opt-num-classes-0", lambda r: None, options("task.num_classes=0"), ConfigError,
         r"task.num_classes=0: must be an integer >= 2"),
    Case("opt-mega-chunk-full", lambda r: None, options("model=mega_chunk", "model.net.backbone.chunk_size=-1"), ConfigError,
         r"model.net.backbone.chunk_size=-1: must be an integer >= 1"),
    # model options (the whole corpus, every option of every model: tests/test_model_options.py)
    Case("opt-s5-dropout-1.5", lambda r: None, options("model=s5", "model.net.backbone.dropout=1.5"), ConfigError,
         r"model.net.backbone.dropout=1.5: must be a number in \[0, 1\)"),
    Case("opt-linformer-k-0", lambda r: None, options("model=linformer", "model.net.backbone.attention.k=0"), ConfigError,
         r"model.net.backbone.attention.k=0: must be an integer >= 1"),
    Case("opt-task-max-length-0", lambda r: None, options("task.max_length=0"), ConfigError,
         r"task.max_length=0: must be an integer >= 1"),
    Case("opt-missing-ckpt-path", lambda r: None,
         lambda r: __import__("lra_bench.train", fromlist=["resume_point"]).resume_point(
             compose_config([f"ckpt_path={r / 'nope.ckpt'}", f"paths.output_dir={r}"]), r),
         ConfigError, r"ckpt_path=.*nope.ckpt: no such file"),
    Case("preset-unknown-lra-experiment", lambda r: None, lambda r: exit_code(
         lambda: __import__("lra_bench.train", fromlist=["check_experiment_names"]).check_experiment_names(
             ["experiment=lra/mega-nosuch"])), SystemExit, r"2"),
]
CASES = [c for c in CASES if c.name != "aan-bad-utf8-chars"]


def _bad_utf8_aan(root: Path) -> None:
    folder = write_aan(root)
    path = folder / "new_aan_pairs.train.tsv"
    path.write_bytes(path.read_bytes().splitlines()[0] + b"\n1.0\tA\tB\t\xff\xfe text\ty\n")


CASES.append(Case("aan-bad-utf8-chars", _bad_utf8_aan, setup_dm(AANDataModule, tokenizer="chars"), DataError,
                  r"new_aan_pairs.train.tsv:2: not valid UTF-8"))


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_clear_message(case: Case, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "root"
    root.mkdir()
    case.setup(root)
    if case.error is None:  # a fault the official data contains: counted and logged, not an error
        with caplog.at_level("WARNING"):
            case.run(root)
        assert pytest.importorskip("re").search(case.message, caplog.text), caplog.text
        return
    if case.error is SystemExit:
        assert str(case.run(root)) == case.message  # the CLI's exit status; its one-line message goes to stderr
        return
    with pytest.raises(case.error) as info:
        case.run(root)
    import re

    text = str(info.value) + (str(info.value.__cause__) if info.value.__cause__ else "")
    assert re.search(case.message, text, re.S), text
    assert "Traceback" not in text


@pytest.mark.parametrize("args, message", [
    pytest.param(["task=text"], "error: no network to fetch stanfordnlp/imdb", marks=pytest.mark.slow),
    (["task=pathfinder"], "error: no pathfinder32/ with  within 3 levels"),
    pytest.param(["experiment=lra/mega-nosuch"], "error: unknown experiment 'lra/mega-nosuch'. Did you mean lra/mega-",
                 marks=pytest.mark.slow),
])
def test_the_command_line_shows_one_line_and_no_traceback(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    proc = subprocess.run([sys.executable, "-m", "lra_bench.train", *args, f"paths.data_dir={tmp_path / 'root'}",
                           f"hydra.run.dir={tmp_path / 'run'}", "logger=csv", "trainer=cpu"],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
