"""One Prefect API per command process tree (ctloop/ops/run_api.py), with real processes: a
`ctloop run` without PREFECT_API_URL starts exactly one Prefect server, whose database is the
project's own (`ctloop up` serves it), hands it to its worker process, and leaves nothing behind:
not after success, not after SIGTERM, not after SIGKILL. Two commands at once share one server.

Server processes are counted by scanning /proc during the run: an API server is a process whose
command line runs Prefect's server app and whose environment names this project's database (so
servers of other tests or projects on the machine are not counted)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from ctloop.core.config import Project
from ctloop.core.faults import CRASH_ENV
from ctloop.ops import run_api
from tests.conftest import ROOT, sample_months
from tests.integration.conftest import MONTHS

# end to end: drives the installed `ctloop` (or `dvc repro`) as separate processes, as a user
# does; `make test-e2e` runs it, `make test` does not
pytestmark = pytest.mark.e2e

CTLOOP = str(ROOT / ".venv" / "bin" / "ctloop")
TINY = {
    "data": {"derive_target": None, "drop_columns": [], "ingest_until": None},
    "split": {"window_start": "2013-01", "window_end": "2013-03", "folds": 3},
    "model": {"fixed": {"xgboost": {"n_estimators": 30, "tree_method": "hist", "n_jobs": 1}}},
    "tune": {"n_trials": 2, "timeout_s": None, "show_progress_bar": False},
    "promotion": {"min_score": 0.55, "model_name": "ctloop-run-api"},
    "insights": {"permutation_repeats": 2, "sample_rows": 800, "shap_rows": 20},
}


@pytest.fixture(scope="module")
def tiny_source(
    default_batches: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("run-api-source") / "flights.parquet"
    sample_months(default_batches, MONTHS, 800).to_parquet(path, index=False)
    return path


@pytest.fixture
def project(make_project: Callable[..., Project], tiny_source: Path) -> Project:
    return make_project({**TINY, "data": {**TINY["data"], "source": str(tiny_source)}})


def _env(tmp_path: Path) -> dict[str, str]:
    """A user's shell: no PREFECT_API_URL (the session's test server is not theirs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.pop(CRASH_ENV, None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env | {"PREFECT_HOME": str(tmp_path / "prefect-home")}


def _servers_of(root: Path) -> set[int]:
    """Pids of live Prefect API servers whose database lies in `root`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if run_api.SERVER_APP.encode() not in cmdline and b"server\0start" not in cmdline:
                continue
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(root).encode() in environ and state != "Z":
            found.add(int(entry.name))
    return found


@contextmanager
def _watch_servers(root: Path) -> Iterator[set[int]]:
    """Collect every API server of `root` seen while the block runs (every 50 ms)."""
    seen: set[int] = set()
    done = threading.Event()

    def scan() -> None:
        while not done.is_set():
            seen.update(_servers_of(root))
            done.wait(0.05)

    thread = threading.Thread(target=scan, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()


def _none_left(root: Path, within_s: float = 5.0) -> set[int]:
    deadline = time.monotonic() + within_s
    while (left := _servers_of(root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _run_server_up(root: Path, timeout_s: float = 180.0) -> run_api.ServerRecord:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = run_api.run_server_record(root / ".ctloop")
        if record is not None and run_api.healthy(record.url):
            return record
        time.sleep(0.2)
    raise AssertionError(f"no healthy run server in {root} within {timeout_s:g} s")


def test_a_run_starts_one_server_on_the_project_database_and_leaves_none(
    project: Project, tmp_path: Path
) -> None:
    root = project.root
    with _watch_servers(root) as seen:
        done = subprocess.run(
            [CTLOOP, "run", "--params", "params.yaml"],
            cwd=root,
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=600,
        )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert len(seen) == 1, f"Prefect API servers started: {sorted(seen)}"
    assert not _none_left(root), "a Prefect server outlived the command"
    assert "Timed out while attempting to connect" not in out
    assert "Prefect: run server http://127.0.0.1:" in out
    # stored where `ctloop up` will serve it, not in PREFECT_HOME
    with sqlite3.connect(root / ".ctloop" / "prefect.db") as db:
        runs = db.execute(
            "select flow_run.state_type from flow_run join flow on flow.id = flow_run.flow_id "
            "where flow.name = 'train-model'"
        ).fetchall()
    assert runs == [("COMPLETED",)]
    assert not (tmp_path / "prefect-home" / "prefect.db").exists()
    assert not (root / ".ctloop" / "api" / run_api.STATE_FILE).exists()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_no_server_left_when_the_command_is_stopped(
    project: Project, tmp_path: Path, how: str
) -> None:
    root = project.root
    proc = subprocess.Popen(
        [CTLOOP, "run", "--params", "params.yaml"],
        cwd=root,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        record = _run_server_up(root)
        assert _servers_of(root)
        proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, out[-2000:]
    assert not _none_left(root, within_s=15), f"{how}: a Prefect server outlived the command"
    deadline = time.monotonic() + 10  # its supervisor reaps it, then forgets it
    while run_api.run_server_record(root / ".ctloop") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run_api.run_server_record(root / ".ctloop") is None, "the supervisor outlived it"
    assert not run_api.healthy(record.url, timeout=1), f"{record.url} still answers"


CLIENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ctloop.ops.run_api import prefect_api
    with prefect_api(Path(sys.argv[1])) as api:
        api.wait_ready(180)
        from prefect import flow

        @flow(name="hello")
        def hello() -> str:
            time.sleep(float(sys.argv[2]))
            return api.url

        print(hello(), flush=True)
    """
)


def test_two_commands_at_once_share_one_server(project: Project, tmp_path: Path) -> None:
    """Started at the same instant in one project: one server, both runs stored, none left
    after the second ends (the first to end does not pull it from under the other)."""
    root = project.root
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    stack = str(root / ".ctloop")
    with _watch_servers(root) as seen:
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), stack, pause],
                cwd=root,
                env=_env(tmp_path),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for pause in ("0", "6")
        ]
        outs = [p.communicate(timeout=300) for p in procs]
    for proc, (_out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-2000:]
    urls = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(urls) == 1, urls
    assert len(seen) == 1, f"servers: {sorted(seen)}"
    assert not _none_left(root)
    with sqlite3.connect(root / ".ctloop" / "prefect.db") as db:
        [(count,)] = db.execute(
            "select count(*) from flow_run join flow on flow.id = flow_run.flow_id "
            "where flow.name = 'hello' and flow_run.state_type = 'COMPLETED'"
        ).fetchall()
    assert count == 2
