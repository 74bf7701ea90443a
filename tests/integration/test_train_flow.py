"""The training flow end to end on a real slice: real Prefect server, MLflow SQLite, DVC, GX."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from ctloop.core.config import Project
from ctloop.io import audit, data, registry, tracking, versioning
from ctloop.ml.validation import ValidationFailed
from ctloop.steps import drift_report
from flows.train_model import train_model
from tasks.training import cache_line
from tests.conftest import new_project
from tests.integration.conftest import SMALL, copy_project, latest_artifact

_artifact = latest_artifact


def _client(project: Project) -> MlflowClient:
    tracking.use_store(project.tracking_uri)
    return MlflowClient()


@dataclass(frozen=True)
class FirstRun:
    """The small project after its first training run, with what that run left on the Prefect
    server (read right after it: later runs replace the latest artifacts)."""

    project: Project  # trained, then used by one test only (reruns keep its validation cache)
    pristine: Project  # a copy right after the first run, never changed: copy it
    summary: Any
    validation: str  # the run's `validation` artifact
    model_card: str  # the run's `model-card` artifact


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, slice_file: Path) -> FirstRun:
    """The small project (conftest.SMALL on the real slice) trained once for this module."""
    root = tmp_path_factory.mktemp("train-flow")
    p = new_project(root / "proj", {**SMALL, "data": {**SMALL["data"], "source": str(slice_file)}})
    summary = train_model(params_path=str(p.root / "params.yaml"))
    validation, card = _artifact("validation"), _artifact("model-card")
    assert validation is not None and card is not None
    pristine = copy_project(p, root / "pristine")
    return FirstRun(p, pristine, summary, str(validation.data), str(card.data))


def test_flow_trains_tracks_registers_promotes_and_reports_drift_then_an_unchanged_rerun_reuses(
    first_run: FirstRun,
) -> None:
    """The first run's results; then (merged here: one training for both) an unchanged rerun
    reports its version and a new search space only retrains."""
    p, summary = first_run.project, first_run.summary

    # data: four immutable monthly batches, versioned by DVC and pushed to the local remote
    assert data.list_batches(p.path("batches")) == ["2013-01", "2013-02", "2013-03", "2013-04"]
    assert summary.data_version == versioning.data_version(p.root, p.params.paths.batches)
    assert any(p.path("dvc_remote").rglob("*")), "nothing pushed to the DVC remote"

    # validation results saved; drift report written with a per-column summary
    validation = json.loads((p.path("reports") / "validation.json").read_text())
    assert len(validation["reports"]) == 4
    assert summary.drift_report.is_file() and summary.drift_batch == "2013-04"
    # the run links its model version's page of the report; the summary sits beside the report
    report = summary.drift_report
    drift = json.loads(report.with_name(f"{drift_report.report_stem(report)}.json").read_text())
    assert {c["column"] for c in drift["columns"]} >= {"distance", "carrier", "temp"}
    # the report is kept under its batch and inputs; the run's tag and the card name that file
    report = summary.drift_report.relative_to(p.root).as_posix()
    assert report.startswith("reports/drift/2013-04/ref-2013-01..2013-02-"), report
    card = (p.path("reports") / "model_card.md").read_text()
    assert f"(in the project: `{report}`)" in card and "Report: <http://127.0.0.1:" in card

    # tracking: parent run with tags, lineage, CV and holdout metrics, one nested run per trial
    client = _client(p)
    run = client.get_run(summary.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["ctloop.data_version"] == summary.data_version
    assert run.data.tags["ctloop.validation"].startswith("passed")
    assert run.data.tags["ctloop.drift_report"] == report
    assert "ctloop.git_commit" in run.data.tags
    for key in ("cv_roc_auc_mean", "cv_roc_auc_std", "holdout_roc_auc", "holdout_pr_auc"):
        assert key in run.data.metrics
    assert {i.dataset.name.split("-")[0] for i in run.inputs.dataset_inputs} == {
        "training",
        "holdout",
    }
    trials = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(trials) == 3
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/roc.png", "plots/importance.png", "plots/folds.png"} <= plots
    _assert_insights_logged(p, client, run.info.run_id)

    # registry: first model clears the floor and becomes champion, decision recorded
    assert summary.promoted and summary.model_version == "1"
    champion = registry.get_alias("ctloop-test", registry.CHAMPION)
    assert champion is not None and str(champion.version) == "1"
    assert champion.tags["promotion.promote"] == "True"
    # the floor of the first model: promotion.min_score of the test project (an absolute 0.55)
    assert champion.tags["promotion.floor"] == "0.55"
    assert champion.tags["promotion.floor_origin"] == "promotion.min_score"
    assert "meets the floor (>= 0.55, promotion.min_score)" in summary.promotion_reason
    assert run.data.metrics["baseline_roc_auc"] == 0.5  # the constant baseline, recorded
    [event] = audit.history("ctloop-test")  # the alias move is on the audit trail
    assert (event.action, event.to_version, event.applied) == ("promote", "1", True)
    model = registry.load_version("ctloop-test", "1")
    holdout = data.read_batches(p.path("batches"), ["2013-03"])
    assert model.predict_proba(holdout[model.feature_names_in_]).shape[1] == 2
    assert champion.tags["ctloop.approval"] == "not-required"

    # model card: the version's description (MLflow UI), the run's artifact, reports/, Prefect
    card = (p.path("reports") / "model_card.md").read_text()
    assert card.startswith("# Model card: ctloop-test v1")
    description = champion.description  # the card, shortened to the registry's 5000 chars
    assert description.startswith(card[:200]) and len(description) <= 5000
    assert "## ML Test Score checklist" in description
    for section in ("## Data", "## Slices", "## Drift at training time", "## ML Test Score"):
        assert section in card
    assert summary.data_version in card and "2013-04 vs 2013-01..2013-02" in card
    assert "- [x] Training and serving share an input schema" in card
    assert "- [ ] Training is reproducible" in card  # the test project is not a git repository
    logged = client.download_artifacts(run.info.run_id, "model_card.md", str(p.root))
    assert Path(logged).read_text() == card
    assert "# Model card: ctloop-test v1" in first_run.model_card
    _assert_unchanged_rerun_reuses_and_a_new_search_space_only_retrains(first_run)


def _task_runs(flow_run_id: UUID) -> list[tuple[str, str]]:
    """(task name, state name) of every task run of one flow run, from the Prefect API."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return [(run.name.rsplit("-", 1)[0], run.state.name) for run in runs if run.state]


def _states(runs: list[tuple[str, str]], name: str) -> set[str]:
    return {state for task, state in runs if task == name}


def _assert_unchanged_rerun_reuses_and_a_new_search_space_only_retrains(run: FirstRun) -> None:
    p, first = run.project, run.summary
    params_file = p.root / "params.yaml"
    assert cache_line(4, 0) in run.validation  # the first run: nothing cached yet
    report = first.drift_report.read_bytes()
    batches = p.path("batches")
    written = {
        n: data.batch_path(batches, n).stat().st_mtime_ns for n in data.list_batches(batches)
    }

    # same data, params and code: v1 is reported; nothing is trained, registered or re-validated
    state = train_model(params_path=str(params_file), return_state=True)
    second = state.result()
    assert second.unchanged and not second.promoted and second.model_version == "1"
    assert (second.cv_mean, second.holdout_score) == (first.cv_mean, first.holdout_score)
    assert second.mlflow_run_id == first.mlflow_run_id
    assert "UNCHANGED" in second.render() and "v1 is @champion" in second.promotion_reason
    runs = _task_runs(state.state_details.flow_run_id)
    assert not _states(runs, "tune-and-fit") and not _states(runs, "register-challenger")
    # one validate-batches task run; every batch's report read back from the cache
    assert _states(runs, "validate-batches") == {"Completed"}
    assert cache_line(0, 4) in str(_artifact("validation").data)
    # the stored drift report of the same inputs is reused: not computed, not rewritten
    assert not _states(runs, "compute-drift") and second.drift_report == first.drift_report
    assert first.drift_report.read_bytes() == report
    _client(p)
    assert len(MlflowClient().search_model_versions("name = 'ctloop-test'")) == 1

    # a new search space (never searched before: no cached result from another session) is
    # tuned and registered; the batches are neither re-ingested nor re-validated
    raw = yaml.safe_load(params_file.read_text())
    raw["model"]["search_space"]["xgboost"]["learning_rate"]["high"] = (
        0.3 + (uuid4().int % 997) * 1e-9
    )
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    state = train_model(params_path=str(params_file), return_state=True)
    third = state.result()
    runs = _task_runs(state.state_details.flow_run_id)
    assert _states(runs, "tune-and-fit") == {"Completed"}
    assert cache_line(0, 4) in str(_artifact("validation").data)
    assert third.data_version == first.data_version and third.model_version == "2"
    assert written == {n: data.batch_path(batches, n).stat().st_mtime_ns for n in written}
    # the bootstrap gate compared v2 with v1: its interval is on the version and on the card
    tags = MlflowClient().get_model_version("ctloop-test", "2").tags
    assert tags["promotion.test"] == "bootstrap" and tags["promotion.rounds"] == "1000"
    gain = [float(tags[f"promotion.{k}"]) for k in ("gain_lower", "gain", "gain_upper")]
    assert gain == sorted(gain) and "(paired bootstrap, 1000 rounds)" in third.promotion_reason
    card = (p.path("reports") / "model_card.md").read_text()
    assert card.startswith("# Model card: ctloop-test v2") and "- Gain over champion v1: " in card
    _assert_slice_regression_refused(p)


INSIGHTS = (
    "permutation_importance",
    "shap_importance",
    "calibration",
    "train_vs_validation",
    "learning_curve",
    "slices",
    "importance_over_versions",
)


def _assert_insights_logged(p: Project, client: MlflowClient, run_id: str) -> None:
    """Tables, figures and uncertainty artifacts of explain-model and the gate, on the run and
    under reports/plots."""
    tables = {a.path for a in client.list_artifacts(run_id, "insights")}
    figures = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {f"insights/{n}.csv" for n in INSIGHTS} <= tables
    assert {f"plots/{n}.png" for n in INSIGHTS} <= figures
    assert {a.path for a in client.list_artifacts(run_id, "uncertainty")} == {
        "uncertainty/fold_models.skops"  # classification: no conformal interval
    }
    assert all((p.path("reports") / "plots" / f"{n}.csv").is_file() for n in INSIGHTS)
    slices = pd.read_csv(p.path("reports") / "plots" / "slices.csv")
    assert set(slices["column"]) == {"carrier", "origin"} and slices["gated"].any()
    history = pd.read_csv(p.path("reports") / "plots" / "importance_over_versions.csv")
    assert set(history["point"]) == {"v1 2013-03"}
    assert "insights_seconds" in client.get_run(run_id).data.metrics


def _leaky_model(X: pd.DataFrame, y: pd.Series, origin: str) -> Any:
    """A fully grown tree fitted on the holdout itself: it knows the holdout's labels, except
    on one origin airport, whose rows it sees once with each label and so scores 0.5: better
    than any real model overall, useless on that slice. Made of scikit-learn types only, so it
    is saved like any version (skops, trusted types)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder
    from sklearn.tree import DecisionTreeClassifier

    text = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    encode = OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2
    )
    model = Pipeline(
        [
            ("encode", ColumnTransformer([("text", encode, text)], remainder="passthrough")),
            ("tree", DecisionTreeClassifier(random_state=0)),
        ]
    )
    blind = (X["origin"] == origin).to_numpy()
    rows = pd.concat([X, X[blind]], ignore_index=True)
    labels = pd.concat([y.where(~blind, 0.0), pd.Series(1.0, index=y[blind].index)])
    return model.fit(rows, labels.astype(int).to_numpy())


def _assert_slice_regression_refused(p: Project) -> None:
    """A challenger better overall that regresses one large slice is refused, named."""
    from ctloop.io import tracking
    from ctloop.ml import training
    from ctloop.steps import evaluate, fit, register, validate, windows

    window = windows.current_window(p)
    holdout = fit.training_data(p, validate.load_batches(p, window.holdout))
    model = _leaky_model(holdout.X, holdout.y, origin="EWR")
    scores = training.predict_scores(model, holdout.X, "classification")
    metrics = training.evaluate("classification", holdout.y, scores)
    evaluation = evaluate.Evaluation(metrics, {}, baseline=0.5)
    exp = tracking.use_experiment(p)
    run_id = tracking.start_parent_run(exp, "slice-regression", {})
    decision = register.register_challenger(p, run_id, model, holdout, evaluation, window)
    assert not decision.promote
    assert "gain +" in decision.reason  # it beats the champion overall...
    assert "origin=EWR (roc_auc 0.5000 vs champion" in decision.reason  # ...but not on EWR
    assert "(significant after Holm" in decision.reason  # the default bootstrap gate
    assert decision.slice_regressions[0].startswith("origin=EWR")
    slices = pd.read_csv(p.path("reports") / "plots" / "slices.csv")
    refused = slices[slices["regression"]]
    assert refused[["column", "value"]].values.tolist() == [["origin", "EWR"]]
    assert slices["champion"].notna().any()


def test_critical_failure_quarantines_batch_and_stops_before_training(
    first_run: FirstRun, tmp_path: Path
) -> None:
    p = copy_project(first_run.pristine, tmp_path / "proj")  # trained once: champion v1
    # a bad delivery of a new month arrives: distances in the wrong unit
    bad = data.read_batches(p.path("batches"), ["2013-04"]).assign(date=pd.Timestamp("2013-05-02"))
    bad["distance"] = bad["distance"] * 1000
    data.write_batch(p.path("batches"), "2013-05", bad)

    with pytest.raises(ValidationFailed, match=r"2013-05.*distance.*ranges"):
        train_model(params_path=str(p.root / "params.yaml"))

    folder = p.path("quarantine") / "2013-05"
    assert (folder / "reason.txt").read_text().count("distance") >= 1
    assert not data.batch_path(p.path("batches"), "2013-05").exists()
    _client(p)
    assert str(registry.get_alias("ctloop-test", registry.CHAMPION).version) == "1"
    versions = MlflowClient().search_model_versions("name = 'ctloop-test'")
    assert len(versions) == 1  # no training happened
