"""Servers the scale-out journeys start for real on loopback: a local S3 server (moto), `prefect
server start`, `mlflow server` with its artifacts in S3, a `prefect worker` of a process pool.

Every server listens on a free port of 127.0.0.1 and is stopped (SIGTERM, then SIGKILL after a
bounded wait) when its fixture or context ends. The object-storage fixtures need the optional
extra `ctloop[s3]` (`make install-s3`; `make test-e2e` installs it): without it they fail with
that instruction, they do not skip."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_ports

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"


@dataclass(frozen=True)
class S3:
    """A running local S3 server: its endpoint, one bucket, and the (fake) credentials that the
    tests' processes get from their environment (and that must never be written anywhere)."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    aws_config: str  # an empty file: the machine's own AWS set-up stays out

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,  # MLflow's S3 artifact store
            # no credentials or endpoints of the machine's own AWS set-up
            "AWS_CONFIG_FILE": self.aws_config,
            "AWS_SHARED_CREDENTIALS_FILE": self.aws_config,
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket under `prefix`."""
        pages = self.client().get_paginator("list_objects_v2")
        return [
            obj["Key"]
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]


def require_s3_extra() -> None:
    """Fail (not skip) when the optional extra is missing: CI must run these tests."""
    missing = [m for m in ("dvc_s3", "boto3") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(
            f"the object-storage tests need the optional extra ctloop[s3] ({', '.join(missing)} "
            "not installed): run `make install-s3` (make test-e2e does)",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    """moto's S3 server on a free loopback port, one bucket, fake credentials in os.environ for
    the module (restored after); the server is stopped after the module."""
    require_s3_extra()
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    aws_config = tmp_path_factory.mktemp("aws") / "config"
    aws_config.write_text("")
    s3 = S3(
        endpoint=f"http://{host}:{port}",
        bucket=f"ctloop-{uuid.uuid4().hex[:8]}",
        access_key=f"CTLOOPKEY{uuid.uuid4().hex[:11].upper()}",
        secret_key=f"ctloop-secret-{uuid.uuid4().hex}",
        aws_config=str(aws_config),
    )
    try:
        with pytest.MonkeyPatch.context() as env:
            for key, value in s3.env.items():
                env.setenv(key, value)
            s3.client().create_bucket(Bucket=s3.bucket)
            yield s3
    finally:
        server.stop()


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def stop(process: subprocess.Popen[bytes], wait_s: float = 30.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited after `wait_s`; returns the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextlib.contextmanager
def server(
    argv: list[str], env: dict[str, str], log: Path, health: str, timeout_s: float = 180
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `argv` (output to `log`), wait until `health` answers 200, stop it on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while not healthy(health):
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, f"{argv[0]} not healthy after {timeout_s} s: {log}"
            time.sleep(0.5)
        yield process
    finally:
        stop(process)


@contextlib.contextmanager
def prefect_server(home: Path, database_url: str | None = None) -> Iterator[str]:
    """`prefect server start` (its own PREFECT_HOME; SQLite there unless `database_url`), UI off;
    yields the API URL."""
    [port] = free_ports(1)
    api = f"http://{HOST}:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api}
    env["PREFECT_UI_ENABLED"] = "false"
    env["PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED"] = "false"  # no cron runs needed here
    if database_url is not None:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    argv = [str(BIN / "prefect"), "server", "start", "--host", HOST, "--port", str(port)]
    home.mkdir(parents=True, exist_ok=True)
    with server(argv, env, home / "prefect-server.log", f"{api}/health"):
        yield api


@contextlib.contextmanager
def mlflow_server(backend: str, artifacts: str, log: Path) -> Iterator[str]:
    """`mlflow server` on `backend` whose artifacts live at `artifacts` (s3://...; the S3
    endpoint and credentials come from the environment); one worker, no job execution."""
    [port] = free_ports(1)
    url = f"http://{HOST}:{port}"
    argv = [
        str(BIN / "mlflow"),
        "server",
        *("--backend-store-uri", backend),
        *("--artifacts-destination", artifacts),
        *("--host", HOST, "--port", str(port), "--workers", "1"),
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with server(argv, env, log, f"{url}/health"):
        yield url


def run(
    argv: list[str], cwd: Path, env: dict[str, str], timeout_s: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; fail the test with its output when it exits non-zero."""
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert done.returncode == 0, (
        f"{argv}: exit {done.returncode}\n" + (done.stdout + done.stderr)[-5000:]
    )
    return done


def files_holding(folders: list[Path], needles: list[str]) -> list[str]:
    """Every file under `folders` whose bytes contain one of `needles` (path: needle)."""
    found = []
    for folder in folders:
        for path in [folder] if folder.is_file() else folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                content = path.read_bytes()
                found += [f"{path}: {n}" for n in needles if n.encode() in content]
    return found


@dataclass
class WorkerExit:
    """How a worker stopped: seconds from SIGTERM to its exit (None: it had to be killed), its
    exit status, and the processes of its session still alive after it (should be none)."""

    signalled_exit_s: float | None = None
    returncode: int | None = None
    leftover: list[int] | None = None


@dataclass
class Worker:
    log: Path
    exit: WorkerExit


def _session_pids(sid: int) -> list[int]:
    """Live processes of session `sid` (from /proc; zombies excluded)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields after ")": state ppid pgrp sid
            pids.append(int(stat.parent.name))
    return pids


@contextlib.contextmanager
def process_worker(
    root: Path, env: dict[str, str], log: Path, pool: str = "ctloop"
) -> Iterator[Worker]:
    """The project's deployments on a shared server through its prefect.yaml: the file generated
    from the project's params.yaml (`python -m deployments.definitions --write`), a process work
    pool, `prefect deploy --all`, then `prefect worker start` as a process of its own session.
    On exit: SIGTERM, and the worker must exit within 60 s leaving no process of its session."""
    python, prefect = str(BIN / "python"), str(BIN / "prefect")
    run(
        [
            python,
            "-m",
            "deployments.definitions",
            "--params",
            "params.yaml",
            "--write",
            "prefect.yaml",
        ],
        root,
        env,
    )
    run([prefect, "work-pool", "create", pool, "--type", "process"], root, env)
    run([prefect, "--no-prompt", "deploy", "--all"], root, env)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [prefect, "worker", "start", "--pool", pool, "--name", f"{pool}-test-worker"],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(log, WorkerExit())
    try:
        yield worker
    finally:
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            worker.exit.returncode = process.wait(timeout=60)
            worker.exit.signalled_exit_s = round(time.monotonic() - began, 1)
        except subprocess.TimeoutExpired:
            process.kill()
            worker.exit.returncode = process.wait()
        time.sleep(1)
        worker.exit.leftover = _session_pids(process.pid)
        for pid in worker.exit.leftover:  # never leave them running, whatever the test says
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
