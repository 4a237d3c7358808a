"""What a person sees in the MLflow UI after a unitrefine run: checked in a real headless Chromium.

    python benchmarks/mlflow_ui.py      # about a minute: a 2-trial smoke run, an MLflow server, three browser visits

Needs Chromium from the system packages (Debian: ``apt-get install chromium``) and the ``playwright`` Python package
(``pip install playwright``; its own browser download is not needed: the installed Chromium is driven through
``executable_path``). Set ``UNITREFINE_CHROMIUM`` to use another Chromium binary.

The smoke experiment is trained into a temporary SQLite store (``python -m unitrefine.train +experiment=smoke``),
``mlflow server`` serves it on a free loopback port, and a fresh browser (nothing remembered from earlier visits)
opens the experiment three ways:

1. the plain experiment address, as a person who clicks the experiment in the experiment list gets it;
2. the address :func:`unitrefine.tracking.runs_view.runs_page` gives (the README's link);
3. the plain address, then the UI's "Model training" switch, then *Views* -> ``unitrefine: cv_score``, then the plain
   address again (the switch is remembered by the browser).

For each it records whether the runs table is shown (not the GenAI view) and which columns it shows. Writes
``benchmarks/results/mlflow_ui.png`` (visit 2) and ``benchmarks/results/mlflow_ui.md``; exits 1 if the link does not
open the runs with ``cv_score`` shown, or the switch or the view do not work.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("mlflow_ui")

RESULTS = Path(__file__).resolve().parent / "results"
CV_SCORE = "metrics.`cv_score`"
#: Evidence that MLflow 3.17 offers no setting for the runs table's default columns nor for the view an experiment
#: opens on (files of the mlflow 3.17.2 wheel, mlflow/server/js/build/static/js/; webpack module ids).
EVIDENCE = """\
- The view an experiment opens on follows the "GenAI | Model training" switch, not the experiment's tags:
  `main.c2f5f8d4.js`, module 31080: `const l=e=>{const{workflowType:t}=(0,a.B)(),n=(0,s.Z0)();return ...
  n?m(t):(... "mlflow.experimentKind" ...)`, where `Z0` is the constant `R=()=>!0` of module 89511, so the
  `mlflow.experimentKind` tag is never read. The switch (module 7975) is `?workflowType=` in the address, else the
  browser's local storage `mlflow.workflowType` (`initialValue:c`, `c=l.GENAI`); nothing comes from the server.
- The runs table's default columns are fixed: `main.c2f5f8d4.js`, module 1395: `u=()=>({selectedColumns:l(),...})`
  with `l=()=>[Source, Models, Dataset]`; the first-visit seeding (`3878.0467b2c4.chunk.js`, `Ra=[...]`) only
  expands parent runs. The only column choice MLflow stores is a saved view: an experiment tag
  `mlflow.sharedViewState.<key>` (module 67593: `$="mlflow.sharedViewState."`), listed under *Views* and opened by
  `?viewStateShareKey=<key>` (`3878.0467b2c4.chunk.js`, `Ia`).
"""


@dataclass(frozen=True)
class PageState:
    """What a visit showed: where the UI ended up, whether it is the runs table, and the table's columns."""

    landed: str
    runs_table: bool
    columns: tuple[str, ...]

    @property
    def cv_score(self) -> bool:
        """Whether the ``cv_score`` column is shown."""
        return CV_SCORE in self.columns


@dataclass
class UiCheck:
    """The visits of :func:`check_ui`."""

    plain: PageState | None = None
    link: PageState | None = None
    switched: PageState | None = None
    view_listed: bool = False
    view: PageState | None = None
    plain_again: PageState | None = None
    browser: str = ""

    def problems(self) -> list[str]:
        """What does not work as the README says (empty: all of it works)."""
        out = []
        if not (self.link and self.link.runs_table and self.link.cv_score):
            out.append(f"the runs_page link did not open the runs with cv_score shown: {self.link}")
        if not (self.switched and self.switched.runs_table):
            out.append(f"the 'Model training' switch did not show the runs table: {self.switched}")
        if not self.view_listed:
            out.append("the Views menu does not list the unitrefine view")
        if not (self.view and self.view.cv_score):
            out.append(f"the unitrefine view did not show cv_score: {self.view}")
        if not (self.plain_again and self.plain_again.runs_table):
            out.append(f"the plain address after the switch did not open the runs: {self.plain_again}")
        return out


def find_chromium() -> str | None:
    """The Chromium binary to drive: ``UNITREFINE_CHROMIUM``, else the first of the usual names on PATH."""
    if os.environ.get("UNITREFINE_CHROMIUM"):
        return os.environ["UNITREFINE_CHROMIUM"]
    names = ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome", "google-chrome-stable")
    return next((path for name in names if (path := shutil.which(name))), None)


def train_smoke(folder: Path, n_trials: int = 2) -> tuple[str, str]:
    """Train the smoke experiment with everything written under ``folder``; return the store URI and experiment id."""
    from mlflow.tracking import MlflowClient

    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder}/mlflow.db"
    cmd = [sys.executable, "-m", "unitrefine.train", "+experiment=smoke", f"search.n_trials={n_trials}",
           f"tracking.uri={uri}", f"tracking.artifact_location={folder.as_uri()}/artifacts",
           f"output.folder={folder}/model", f"search.storage={folder}/study.journal"]
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"the smoke run failed:\n{proc.stderr[-3000:]}")
    experiment = MlflowClient(uri).get_experiment_by_name("smoke")
    if experiment is None:
        raise RuntimeError(f"the smoke run left no experiment 'smoke' in {uri}")
    return uri, experiment.experiment_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(uri: str, timeout_s: float = 180.0) -> Iterator[str]:
    """Run ``mlflow server`` on ``uri`` on a free loopback port; yield its address; stop it (by its process group)."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while not _answers(f"{base}/health"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    err.seek(0)
                    raise RuntimeError(f"mlflow server did not start:\n{err.read().decode()[-2000:]}")
                time.sleep(0.5)
            yield base
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _read(page: Any, expect_cv_score: bool = False) -> PageState:
    """Wait until the UI has shown the runs table or the GenAI view; read what it shows."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.wait_for_function(
        "() => document.querySelector('[role=columnheader]') || location.hash.includes('workflowType=genai')",
        timeout=90_000)
    runs = page.query_selector("[role=columnheader]") is not None
    try:  # the columns of a saved view come a moment after the table
        if runs and expect_cv_score:
            page.wait_for_selector(f"[role=columnheader][col-id='{CV_SCORE}']", timeout=10_000)
        page.wait_for_load_state("networkidle", timeout=10_000)
    except PlaywrightTimeout:
        pass
    page.wait_for_timeout(1000)  # let the last data render before a screenshot
    ids = page.eval_on_selector_all("[role=columnheader]", "els => els.map(e => e.getAttribute('col-id'))")
    columns = tuple(c for c in ids if c and c.split(".", 1)[0] in ("attributes", "metrics", "params", "tags"))
    landed = page.url.split("#", 1)[-1]
    return PageState(landed, runs, columns)


def _dismiss_guidance(page: Any) -> None:
    """Close MLflow's first-visit popover ("Detect Issues ... Got it"), which blocks clicks until closed."""
    got_it = page.get_by_role("button", name="Got it")
    if got_it.count():
        got_it.first.click()


def check_ui(base: str, experiment_id: str, chromium: str, screenshot: Path | None = None) -> UiCheck:
    """Open the experiment in headless Chromium the three ways the module docstring lists."""
    from playwright.sync_api import sync_playwright

    from unitrefine.tracking.runs_view import RUNS_VIEW_NAME, runs_page

    check = UiCheck()
    plain = f"{base}/#/experiments/{experiment_id}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        check.browser = f"Chromium {browser.version}"
        try:
            for visit in ("plain", "link", "switch"):
                context = browser.new_context(viewport={"width": 1600, "height": 1000})  # nothing remembered
                page = context.new_page()
                if visit == "plain":
                    page.goto(plain)
                    check.plain = _read(page)
                elif visit == "link":
                    page.goto(runs_page(base, experiment_id))
                    check.link = _read(page, expect_cv_score=True)
                    if screenshot is not None:
                        page.screenshot(path=str(screenshot))
                else:
                    _switch_and_view(page, plain, RUNS_VIEW_NAME, check)
                context.close()
        finally:
            browser.close()
    return check


def _switch_and_view(page: Any, plain: str, view_name: str, check: UiCheck) -> None:
    """Visit 3: the plain address, the "Model training" switch, the saved view, the plain address again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(plain)
    _read(page)
    _dismiss_guidance(page)
    page.get_by_text("Model training", exact=True).first.click()
    try:  # the address changes to workflowType=machine_learning when the switch works
        page.wait_for_function("() => !location.hash.includes('workflowType=genai')", timeout=30_000)
    except PlaywrightTimeout:
        pass
    check.switched = _read(page)
    if not check.switched.runs_table:
        return
    page.get_by_test_id("saved-views-trigger").click()
    entry = page.get_by_text(view_name, exact=True)
    entry.first.wait_for(timeout=10_000)
    check.view_listed = entry.count() > 0
    entry.first.click()
    check.view = _read(page, expect_cv_score=True)
    page.goto(plain)
    check.plain_again = _read(page)


def _row(what: str, state: PageState | None) -> str:
    if state is None:
        return f"| {what} | not reached | | |"
    shown = "runs table" if state.runs_table else "GenAI view"
    cols = ", ".join(c.replace("`", "") for c in state.columns) or "-"
    return f"| {what} | {shown} (`{state.landed.split('?', 1)[0]}`) | {'yes' if state.cv_score else 'no'} | {cols} |"


def report(check: UiCheck, n_trials: int) -> str:
    """The Markdown of ``benchmarks/results/mlflow_ui.md``."""
    from importlib.metadata import version

    problems = check.problems()
    lines = [
        "# The MLflow UI on a unitrefine experiment (headless Chromium)", "",
        "`python benchmarks/mlflow_ui.py`: a smoke run "
        f"({n_trials} trials) into a fresh SQLite store, `mlflow server` on loopback, a fresh browser per visit.", "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; MLflow {version('mlflow')}; "
        f"{check.browser} driven by playwright {version('playwright')}",
        f"- result: {'PASS' if not problems else 'FAIL: ' + '; '.join(problems)}", "",
        "| visit | shows | cv_score column | columns shown |", "| --- | --- | --- | --- |",
        _row("1. plain experiment address `#/experiments/<id>`", check.plain),
        _row("2. `runs_page()` link (`.../runs?workflowType=machine_learning&viewStateShareKey=unitrefine`)",
             check.link),
        _row("3a. plain address, then the *Model training* switch", check.switched),
        _row(f"3b. then *Views* -> `unitrefine: cv_score` (listed: {'yes' if check.view_listed else 'no'})",
             check.view),
        _row("3c. then the plain address again (same browser)", check.plain_again), "",
        "Screenshot of visit 2: [mlflow_ui.png](mlflow_ui.png).", "",
        "## Why a link and a saved view, not a default", "", EVIDENCE,
    ]
    return "\n".join(lines)


def main() -> int:
    """Train, serve, look; write the screenshot and the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=2, help="trials of the smoke run (default 2)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    chromium = find_chromium()
    if chromium is None:
        log.error("No Chromium found: apt-get install chromium (or set UNITREFINE_CHROMIUM).")
        return 2
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="unitrefine-mlflow-ui-") as tmp:
        log.info("Training the smoke experiment (%d trials)...", args.trials)
        uri, experiment_id = train_smoke(Path(tmp), args.trials)
        with serve(uri) as base:
            log.info("MLflow server up; opening the experiment in %s", chromium)
            check = check_ui(base, experiment_id, chromium, RESULTS / "mlflow_ui.png")
    (RESULTS / "mlflow_ui.md").write_text(report(check, args.trials), encoding="utf-8")
    for problem in check.problems():
        log.error("%s", problem)
    log.info("Wrote %s and %s", RESULTS / "mlflow_ui.md", RESULTS / "mlflow_ui.png")
    return 1 if check.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
