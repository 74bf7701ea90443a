"""Bad deliveries (tests/corpus/make_bad_batches.py) against a real project trained once: each one
fails (or warns) naming the file, the column and the rule, lands in quarantine with a reason,
leaves the versioned batches, dvc.lock and the champion untouched; the next good batch goes
through. The cases run in order on one project; the state is compared after each."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctloop.core.config import Project, load_project
from ctloop.io import data, registry, tracking
from ctloop.ml.validation import ValidationFailed
from ctloop.ops.project_init import scaffold
from ctloop.steps import monitoring
from flows.monitor_batch import monitor_batch
from flows.train_model import train_model
from tests.conftest import ROOT, _merge
from tests.corpus import make_bad_batches as corpus_gen
from tests.integration.conftest import SMALL

MODEL = "ctloop-bad"
CLI_CASES = {"non_utf8_csv", "out_of_range"}  # through `ctloop ingest` in a subprocess
CASE_NAMES = [c.name for c in corpus_gen.CASES]


@dataclass(frozen=True)
class Corpus:
    folder: Path
    cases: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    folder = tmp_path_factory.mktemp("corpus")
    return Corpus(folder, {c["name"]: c for c in corpus_gen.build(folder)})


def _params(changes: dict[str, Any]) -> dict[str, Any]:
    return _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), changes)


@pytest.fixture(scope="module")
def project(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The default data config (target derived from arr_delay, raw columns dropped) on the
    corpus's initial Jan-Mar source; trained once (train Jan-Feb, holdout Mar)."""
    root = tmp_path_factory.mktemp("bad-batches") / "proj"
    root.mkdir()
    changes = {
        "data": {"source": str(corpus.folder / corpus_gen.INITIAL), "ingest_until": None},
        "split": SMALL["split"],
        "model": SMALL["model"],
        "tune": SMALL["tune"],
        "promotion": {**SMALL["promotion"], "model_name": MODEL},
        "continuous": {"cooldown_minutes": 0},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(_params(changes), sort_keys=False))
    scaffold(root)  # dvc.yaml as `ctloop init` writes it, and the DVC repository
    summary = train_model(params_path=str(root / "params.yaml"))
    assert summary.promoted and summary.model_version == "1"
    return load_project(root / "params.yaml")


# --- state -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    batches: dict[str, str]  # batch file -> sha256 of its bytes
    dvc_lock: str
    champion: tuple[str, str, str]  # version, run id, source
    versions: int
    quarantine: frozenset[str]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(p: Project) -> State:
    from mlflow import MlflowClient

    tracking.use_store(p.tracking_uri)
    champion = registry.get_alias(MODEL, registry.CHAMPION)
    assert champion is not None
    folder, quarantine = p.path("batches"), p.path("quarantine")
    return State(
        batches={f.name: _sha(f) for f in sorted(folder.iterdir()) if f.is_file()},
        dvc_lock=_sha(p.root / "dvc.lock"),
        champion=(str(champion.version), str(champion.run_id), str(champion.source)),
        versions=len(MlflowClient().search_model_versions(f"name = '{MODEL}'")),
        quarantine=frozenset(q.name for q in quarantine.iterdir())
        if quarantine.is_dir()
        else frozenset(),
    )


def assert_untouched(before: State, after: State, added: set[str] = frozenset()) -> None:
    """Versioned batches keep their bytes; only `added` batches appear (and then dvc.lock moves);
    the champion and its model stay; nothing new is registered."""
    assert set(after.batches) - set(before.batches) == added
    assert {b: after.batches[b] for b in before.batches} == before.batches
    assert (after.dvc_lock == before.dvc_lock) == (not added)
    assert after.champion == before.champion
    assert after.versions == before.versions


# --- delivering --------------------------------------------------------------------------


def _place(p: Project, corpus: Corpus, case: dict[str, Any]) -> tuple[str, Path]:
    """Put the case's file where the case says; returns the monitor path and the file's place."""
    source = corpus.folder / case["file"]
    landing = p.path("landing")
    landing.mkdir(parents=True, exist_ok=True)
    if case["placement"] == "absolute":
        return str(source), source
    if case["placement"] == "symlink":
        link = landing / case["file"]
        link.symlink_to(source)
        return case["file"], link
    target = (landing / case["monitor_path"]).resolve()
    shutil.copyfile(source, target)
    return case["monitor_path"], target


def _params_for(p: Project, case: dict[str, Any]) -> Path:
    if not case["params"]:
        return p.root / "params.yaml"
    raw = _merge(yaml.safe_load((p.root / "params.yaml").read_text()), case["params"])
    path = p.root / f"params-{case['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _run_cli(p: Project, corpus: Corpus, case: dict[str, Any]) -> tuple[int, str]:
    """`ctloop ingest FILE --here` in a subprocess, against the session's Prefect test server
    (PREFECT_API_URL: no temporary server of its own)."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    ctloop = Path(sys.executable).parent / "ctloop"
    cmd = [str(ctloop), "ingest", str(corpus.folder / case["file"]), "--here"]
    cmd += ["--params", str(_params_for(p, case))]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=p.root)
    return done.returncode, done.stderr


def _names_file_column_rule(message: str, case: dict[str, Any]) -> None:
    assert case["file"] in message, message
    assert f"rule '{case['rule']}'" in message, message
    if case["column"] is not None:
        assert f"column '{case['column']}'" in message, message


def _quarantined(p: Project, before: State, case: dict[str, Any]) -> None:
    """The delivered file is in `<quarantine>/<stem>[-stamp]/` with a reason naming file, column
    and rule; it left the landing folder."""
    new = sorted(set(snapshot(p).quarantine) - before.quarantine)
    stem = Path(case["file"]).stem
    [folder] = [p.path("quarantine") / n for n in new if n.startswith(stem)]
    assert (folder / case["file"]).is_file()
    assert not (p.path("landing") / case["file"]).exists()
    reason = (folder / "reason.txt").read_text()
    assert "deliver it again" in reason
    _names_file_column_rule(reason, case)
    record = json.loads((folder / "reason.json").read_text())
    assert record["file"] == case["file"]


# --- the corpus ----------------------------------------------------------------------------


def test_the_corpus_covers_the_issue(corpus: Corpus) -> None:
    cases = corpus.cases.values()
    assert len(corpus.cases) >= 20
    outcomes = {c["outcome"] for c in cases}
    assert outcomes == {"rejected", "warning", "duplicate", "refused"}
    rules = {c["rule"] for c in cases}
    assert {"schema", "types", "nulls", "ranges", "categories", "duplicates", "target"} <= rules
    assert {"not_empty", "readable", "encoding", "truncated", "max_file_mb"} <= rules
    assert {"immutable_batch", "landing_path"} <= rules
    manifest = json.loads((corpus.folder / corpus_gen.MANIFEST).read_text())
    assert [c["name"] for c in manifest["cases"]] == CASE_NAMES
    assert all((corpus.folder / c["file"]).is_file() for c in cases)
    assert max((corpus.folder / c["file"]).stat().st_size for c in cases) < 1_000_000


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_delivery_is_contained(project: Project, corpus: Corpus, name: str) -> None:
    p, case = project, corpus.cases[name]
    before = snapshot(p)
    params = str(_params_for(p, case))

    if name in CLI_CASES:
        code, stderr = _run_cli(p, corpus, case)
        assert code == 1, stderr
        assert "ctloop: error:" in stderr
        _names_file_column_rule(stderr, case)
        _quarantined(p, before, case)
        assert_untouched(before, snapshot(p))
        return

    path, placed = _place(p, corpus, case)
    outcome = case["outcome"]
    if outcome == "rejected":
        with pytest.raises((data.DataError, ValidationFailed)) as failure:
            monitor_batch(path=path, params_path=params)
        _names_file_column_rule(str(failure.value), case)
        _quarantined(p, before, case)
        if isinstance(failure.value, ValidationFailed):  # the batch has its own folder too
            new = set(snapshot(p).quarantine) - before.quarantine
            [batch] = [n for n in new if n.startswith("2013-04")]
            assert (p.path("quarantine") / batch / "validation.json").is_file()
        assert_untouched(before, snapshot(p))
    elif outcome == "refused":
        with pytest.raises(monitoring.LandingError) as failure:
            monitor_batch(path=path, params_path=params)
        _names_file_column_rule(str(failure.value), case)
        assert placed.exists() or placed.is_symlink()  # not ours: left where it is
        assert (corpus.folder / case["file"]).is_file()
        after = snapshot(p)
        assert after.quarantine == before.quarantine
        assert_untouched(before, after)
    elif outcome == "duplicate":
        results = monitor_batch(path=path, params_path=params)
        assert results and {r.status for r in results} == {"duplicate"}
        after = snapshot(p)
        assert after.quarantine == before.quarantine
        assert_untouched(before, after)
    else:  # warning: the batch goes through, the warning names file, column and rule
        [result] = monitor_batch(path=path, params_path=params)
        assert (result.batch, result.status) == (case["period"], "monitored")
        assert result.model_version == before.champion[0]
        hits = [w for w in result.warnings if f"rule '{case['rule']}' (warning)" in w]
        assert hits, result.warnings
        _names_file_column_rule(hits[0], case)
        after = snapshot(p)
        assert after.quarantine == before.quarantine
        assert_untouched(before, after, added={f"{case['period']}{data.BATCH_SUFFIX}"})


def test_the_next_good_batch_is_monitored(project: Project, corpus: Corpus) -> None:
    """After the whole corpus: a real April goes through with the same champion, every rejected
    file sits in quarantine, and nothing was lost or left half-done."""
    p = project
    before = snapshot(p)
    p.path("landing").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(corpus.folder / corpus_gen.GOOD, p.path("landing") / corpus_gen.GOOD)
    [result] = monitor_batch(path=corpus_gen.GOOD, params_path=str(p.root / "params.yaml"))
    assert (result.batch, result.status, result.model_version) == ("2013-04", "monitored", "1")
    assert monitoring.predictions_path(p, "2013-04", "1").is_file()
    assert_untouched(before, snapshot(p), added={"2013-04.parquet"})

    rejected = [c for c in corpus.cases.values() if c["outcome"] == "rejected"]
    quarantined = {q.name for q in p.path("quarantine").iterdir()}
    for case in rejected:
        assert any(q.startswith(Path(case["file"]).stem) for q in quarantined), case["name"]
        assert not (p.path("landing") / case["file"]).exists(), case["name"]
    _quarantine_events_were_emitted({c["file"] for c in rejected})


def _quarantine_events_were_emitted(files: set[str], wait_s: float = 15.0) -> None:
    """Every file refused before its batches were written (and every failed batch) was announced
    as ctloop.batch.quarantined."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()
    wanted = EventFilter(event=EventNameFilter(name=["ctloop.batch.quarantined"]))
    deadline = time.monotonic() + wait_s
    while True:
        with get_client(sync_client=True) as client:
            page = client.read_events(wanted, limit=50)
            found = list(page.events)
            while page.next_page is not None:
                page = client.read_events_page(page.next_page)
                found += page.events
        seen = {e.payload.get("file") for e in found}
        if files <= seen or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert files <= seen, sorted(files - seen)
