"""Browser tests: a small trained project with `ctloop up` running and two monitored batches
(`ctloop replay`), looked at in headless Chromium (Debian's package, driven by Playwright;
Playwright's own browser download is not reachable). Every page visited is saved as a full-page
PNG under $CTLOOP_UI_SCREENSHOTS (default build/ui-screenshots/), the folder CI keeps.

README's screenshots (docs/*.png) are the shots a test passes as `doc=`: with
CTLOOP_DOCS_SCREENSHOTS=1 (`make screenshots`) they are written again there, made small (the
visible viewport only, scaled down, 256 colours).

A check of another page is one function with the `ui` fixture:

    def test_some_page(ui: UiStack) -> None:
        page = ui.open(f"{ui.info.mlflow_url}/#/models", "ctloop-ui", shot="mlflow-models")
        assert ...  # anything else on `page` (a Playwright Page)

`ui.open` waits (generously: the machine is loaded) until every expected text is visible, saves
the screenshot, and fails, with a screenshot `<shot>-failed.png`, when a text never shows or the
page asked a host other than the stack's (the UIs must work offline).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pandas as pd
import pytest

from ctloop.core.config import Project
from ctloop.ops import stack
from tests.conftest import ROOT, free_ports, new_project, sample_months

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Route

CTLOOP = str(Path(sys.executable).parent / "ctloop")
SCREENSHOTS = Path(os.environ.get("CTLOOP_UI_SCREENSHOTS") or ROOT / "build" / "ui-screenshots")
CHROMIUM = os.environ.get("CTLOOP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
MODEL = "ctloop-ui"
TRAINED = ["2013-01", "2013-02", "2013-03"]  # training window (Mar is the holdout)
MONITORED = ["2013-04", "2013-05"]  # delivered after training, one monitor-batch run each
PAGE_TIMEOUT_MS = 90_000  # single-page apps on a loaded 2-core machine
COMMAND_TIMEOUT_S = 600
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
MLFLOW_ASSISTANT_CLOSED = """
localStorage.setItem("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");
localStorage.setItem("mlflow.assistant.panelOpen_v1", "false");
"""
DOCS = ROOT / "docs"  # README's screenshots
DOCS_SHOTS = os.environ.get("CTLOOP_DOCS_SCREENSHOTS", "") not in {"", "0"}
DOC_WIDTH = 1000  # pixels of a README screenshot

SMALL: dict[str, Any] = {
    "data": {"derive_target": None, "drop_columns": [], "ingest_until": TRAINED[-1]},
    "split": {"window_start": TRAINED[0], "window_end": TRAINED[-1], "folds": 3},
    "model": {"fixed": {"xgboost": {"n_estimators": 40, "tree_method": "hist", "n_jobs": 1}}},
    "tune": {"n_trials": 2, "timeout_s": None, "show_progress_bar": False},
    "promotion": {"min_score": 0.55, "test": "none", "model_name": MODEL},
    "insights": {
        "permutation_repeats": 1,
        "sample_rows": 500,
        "shap_rows": 20,
        "learning_curve": [1.0],
    },
}


@dataclass
class UiStack:
    """The running stack of the module's project and a browser context to look at it."""

    project: Project
    info: stack.StackInfo
    context: BrowserContext
    shots: Path
    replay: str = ""  # what `ctloop replay` printed
    external: list[str] = field(default_factory=list)  # requests to hosts other than ours

    def open(
        self, url: str, *expect: str | re.Pattern[str], shot: str, doc: str | None = None
    ) -> Page:
        """A new page at `url`, once each of `expect` (a text it contains, or a pattern) is
        visible; saved as `<shot>.png` (and as docs/<doc>.png: see the module's docstring)."""
        page = self.context.new_page()
        page.goto(url, wait_until="domcontentloaded")
        self.wait_for(page, *expect, shot=shot, doc=doc)
        return page

    def wait_for(
        self,
        page: Page,
        *expect: str | re.Pattern[str],
        shot: str,
        doc: str | None = None,
        frame: str | None = None,
    ) -> None:
        """Wait until each text of `expect` is visible on `page` (inside its iframe matched by
        the CSS selector `frame` when given), then save `<shot>.png`; fails when any page so far
        asked a host other than the stack's (refused: the UIs work offline)."""
        from playwright.sync_api import Error
        from playwright.sync_api import expect as playwright_expect

        where = page if frame is None else page.frame_locator(frame).first
        try:
            for text in expect:
                playwright_expect(where.get_by_text(text).first).to_be_visible(
                    timeout=PAGE_TIMEOUT_MS
                )
        except (AssertionError, Error):
            self.shot(page, f"{shot}-failed")
            raise
        self.shot(page, shot)
        if doc is not None and DOCS_SHOTS:
            doc_shot(page, DOCS / f"{doc}.png")
        assert not self.external, (
            f"{page.url} (or a page before it) asked other hosts: {self.external}"
        )

    def shot(self, page: Page, name: str) -> Path:
        """Save the whole page as `<name>.png` in the screenshots folder."""
        path = self.shots / f"{name}.png"
        page.screenshot(path=path, full_page=True)
        return path


def doc_shot(page: Page, path: Path) -> Path:
    """A small PNG of what the page shows (its viewport): DOC_WIDTH pixels wide, 256 colours."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(page.screenshot(full_page=False))).convert("RGB")
    height = round(image.height * DOC_WIDTH / image.width)
    small = image.resize((DOC_WIDTH, height), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    small.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def _cli(args: list[str], env: dict[str, str]) -> str:
    """Run `ctloop ARGS` as a user does; its output, or a failure that shows it."""
    began = time.monotonic()
    done = subprocess.run(
        [CTLOOP, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    print(f"ctloop {args[0]}: {time.monotonic() - began:.1f} s")
    assert done.returncode == 0, f"ctloop {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def ui_project(
    default_batches: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Project, stack.StackInfo, str]]:
    """A small project under `ctloop up --no-serve` (free ports), trained on Jan-Mar with
    `ctloop run`, then each of MONITORED delivered and monitored against the stack (`ctloop replay
    --here`): (project, stack, what replay printed); `ctloop down` at the end."""
    tmp = tmp_path_factory.mktemp("ui")
    source = tmp / "source.parquet"
    sample_months(default_batches, TRAINED + MONITORED, 1000).to_parquet(source, index=False)
    prefect_port, mlflow_port, evidently_port = free_ports(3)
    changes = {
        **SMALL,
        "data": {**SMALL["data"], "source": str(source)},
        "stack": {
            "prefect_port": prefect_port,
            "mlflow_port": mlflow_port,
            "evidently_port": evidently_port,
        },
    }
    project = new_project(tmp / "proj", changes)
    params = str(project.root / "params.yaml")
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    try:
        _cli(["up", "--no-serve", "--params", params], env)
        info = stack.read_info(project)
        assert info is not None, "ctloop up recorded no stack"
        env |= stack.stack_env(project)
        _cli(["run", "--params", params], env)
        replay = ["replay", "--start", MONITORED[0], "--end", MONITORED[-1], "--here"]
        printed = _cli([*replay, "--params", params], env)
        print(printed)
        yield project, info, printed
    finally:
        _cli(["down", "--params", params], env)


@pytest.fixture(scope="module")
def ui(ui_project: tuple[Project, stack.StackInfo, str]) -> Iterator[UiStack]:
    """The module's stack and one headless Chromium context (offline: other hosts are refused)."""
    from playwright.sync_api import sync_playwright

    project, info, printed = ui_project
    shots = SCREENSHOTS
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser: Browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        # reduced motion: charts drawn at once (Evidently's bars grow otherwise: a shot taken
        # as the panel shows would catch them half way)
        context = browser.new_context(
            viewport={"width": 1400, "height": 1000}, reduced_motion="reduce"
        )
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        # MLflow opens its assistant panel on a browser's first visit, over a third of the page:
        # looked at as by someone who closed it once
        context.add_init_script(MLFLOW_ASSISTANT_CLOSED)
        found = UiStack(project, info, context, shots, printed)

        def offline(route: Route) -> None:
            host = urlsplit(route.request.url).hostname or ""
            if route.request.url.startswith(("http://", "https://")) and host not in LOCAL_HOSTS:
                found.external.append(route.request.url)
                route.abort()
            else:
                route.continue_()

        context.route("**/*", offline)
        try:
            yield found
        finally:
            context.close()
            browser.close()


@contextlib.contextmanager
def prefect_client(info: stack.StackInfo) -> Iterator[Any]:
    """A sync Prefect client of the stack's API."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: info.prefect_api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client
