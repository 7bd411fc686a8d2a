"""The report of a mixed set of real runs (full and quick ListOps, two seeds, an lr variant), read by people: its
tables as the issue asks, and ``report.html`` rendered in headless Chromium, where every image must load and no
table may be wider than the page; the screenshot is kept for a person to look at.

Chromium comes from ``make browser`` (CI runs it before ``make test-slow``). Without it the browser test fails under
CI (``CI`` set) with one line saying so, and is skipped elsewhere."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lra_bench import train as train_mod
from lra_bench.reporting import report
from data_prep.listops import generate
from tests.conftest import TINY_LISTOPS_COUNTS, TINY_LISTOPS_SPEC, TINY_RUN, compose_config

pytestmark = pytest.mark.slow

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars")
WIDTH = 1280  # a laptop's window
# run folders are named as Hydra names them: the overrides, with no space to break a line at
SLUG = "logger=csv,model.d_model=32,model.net.backbone.d_ff=64,model.net.backbone.n_heads=2,mod-964e71f1,"
# appended to a copy of the page: on load, what a reader would see, written into the DOM for --dump-dom
CHECK = """<script>window.addEventListener('load', () => {
  const page = document.documentElement;
  const out = {
    images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})),
    tables: [...document.querySelectorAll('table')].map((t, k) => ({index: k, width: Math.ceil(t.getBoundingClientRect().width),
             room: t.parentElement.clientWidth, first: t.rows[0].cells[0].textContent})),
    page_width: page.scrollWidth, window_width: window.innerWidth, height: page.scrollHeight};
  const pre = document.createElement('pre'); pre.id = 'lra-check'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


def browser() -> str:
    """The Chromium binary; without one, a one-line failure under CI and a skip elsewhere."""
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        reason = "no Chromium on PATH (chromium, chromium-browser or google-chrome): run `make browser` (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return found


def chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tiny real runs through the harness's own loop and writer: full ListOps seeds 1 and 2, an lr variant (seed 1),
    and the quick short-ListOps variant (its own data folder, as ``experiment=quick`` has it); then the report."""
    data, logs = tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("logs")
    generate(data / "listops-1000", TINY_LISTOPS_COUNTS, seed=0, spec=TINY_LISTOPS_SPEC, progress=False)
    generate(data / "listops-quick", TINY_LISTOPS_COUNTS, seed=1, spec=TINY_LISTOPS_SPEC, progress=False)
    jobs = {"full-seed1": ["seed=1"], "full-seed2": ["seed=2"], "lr-seed1": ["seed=1", "optimizer.lr=5e-4"],
            "quick-seed1": ["seed=1", "task.datamodule.dirname=listops-quick"]}
    for name, extra in jobs.items():
        cfg = compose_config([*TINY_RUN, "trainer.max_epochs=1", f"paths.data_dir={data}",
                              f"paths.output_dir='{logs / 'runs' / 'transformer-listops' / (SLUG + name)}'", *extra])
        train_mod.train(cfg)
    out = tmp_path_factory.mktemp("report")
    assert report.main(["--runs", str(logs), "--bench", str(out / "no_bench"), "--out", str(out)]) == 0
    return {"logs": logs, "out": out, "md": (out / "report.md").read_text()}


def test_the_mixed_set_gives_one_configuration_per_cell_and_keeps_the_quick_run_out_of_the_lra_table(mixed: dict) -> None:
    md = mixed["md"]
    lra = md.split("## LRA accuracy")[1].split("\n\n")[1]
    rows = [line for line in lra.splitlines() if line.startswith("| **transformer**")]
    assert len(rows) == 2
    assert rows[0].startswith("| **transformer** | reduced | ") and "(n=2) · 1 config" in rows[0]  # the two seeds
    assert rows[1].startswith("| **transformer** (lr=0.0005) | reduced | ") and "(n=1) · 1 config" in rows[1]
    other = md.split("## Runs on other data (not LRA tasks)")[1].split("\n## ")[0]
    assert "| **transformer** | ListOps | dirname=listops-quick | reduced |" in other
    placed = {line.split(" | ")[-1].rstrip(" |`").rsplit(",", 1)[-1]: line.split(" | ")[4] for line in md.split("\n## Runs\n")[1].splitlines()
              if line.startswith("| transformer |")}
    assert placed == {"full-seed1": "transformer", "full-seed2": "transformer", "lr-seed1": "transformer (lr=0.0005)",
                      "quick-seed1": "transformer, dirname=listops-quick"}
    assert "`optimizer.lr` = 0.0005 (reference 0.001)" in md


def test_the_html_report_in_chromium_loads_every_image_and_fits_its_tables_to_the_page(mixed: dict, tmp_path: Path) -> None:
    binary = browser()
    page = (mixed["out"] / "report.html").read_text()
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", CHECK + "</body>"))
    dom = chromium(binary, tmp_path / "profile", f"--window-size={WIDTH},900", "--virtual-time-budget=10000", "--dump-dom",
                   checked.as_uri())
    found = re.search(r'<pre id="lra-check">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"Chromium gave no check result (rc {dom.returncode}): {dom.stderr[-1500:]}"
    seen = json.loads(html.unescape(found.group(1)))
    assert len(seen["images"]) == 2 and all(i["complete"] and i["width"] > 0 for i in seen["images"]), seen["images"]
    assert len(seen["tables"]) >= 3
    too_wide = [t for t in seen["tables"] if t["width"] > t["room"]]
    assert not too_wide, f"tables wider than the page's {too_wide[0]['room']} px: {too_wide}"
    assert seen["page_width"] <= seen["window_width"], seen
    shot = mixed["out"] / "report.png"  # kept beside the report for a person to look at
    height = min(seen["height"] + 40, 12000)
    taken = chromium(binary, tmp_path / "profile2", f"--window-size={WIDTH},{height}", f"--screenshot={shot}",
                     "--virtual-time-budget=10000", (mixed["out"] / "report.html").as_uri())
    assert shot.is_file() and shot.read_bytes()[:4] == b"\x89PNG", taken.stderr[-1500:]
    copy = os.environ.get("LRA_REPORT_SCREENSHOT")  # where a person wants the screenshot (and the report) kept
    if copy:
        shutil.copytree(mixed["out"], copy, dirs_exist_ok=True)
