"""The scale benchmark end to end at a modest size (slow: `make test-slow`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_scale_benchmark_runs_every_phase(tmp_path: Path) -> None:
    """Two small sizes through ingest, validation, drift (two samplings) and training."""
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "scale.py"),
        "--sizes", "20k,40k",
        "--n-trials", "1",
        "--folds", "2",
        "--drift-samples", "none,5000",
        "--data-dir", str(tmp_path / "data"),
        "--json", str(tmp_path / "scale.json"),
    ]  # fmt: skip
    done = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    name, value = lines[-1].split(": ")
    assert name == "scale_time_growth_20k_to_40k" and float(value) > 0
    assert lines[-2].startswith("scale_peak_rss_gb: ")
    assert float(lines[-2].split(": ")[1]) < 8
    report = done.stdout
    for phase in ("ingest", "validate_build", "validate_run", "drift (sample_rows=5000)", "train"):
        assert f"| {phase} |" in report
    assert "SYNTHETIC" in report
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "flights-SYNTHETIC-20000.parquet",
        "flights-SYNTHETIC-40000.parquet",
    ]
    assert "batch quarantined" not in done.stderr  # synthetic batches pass their own suite
