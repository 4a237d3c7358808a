"""What a run reports (:mod:`unitrefine.export.report`): flat configurations, the leaderboard of trial records, the
per-unit predictions and held-out figures of a tiny fitted model (recomputed with scikit-learn), and the summary."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from unitrefine.data.dataset import UnitTable
from unitrefine.export.report import (
    IMPORTANCE_REPEATS,
    TrainResult,
    evaluate_holdout,
    leaderboard,
    predictions,
    spec_params,
    summary,
)
from unitrefine.model.threshold import with_threshold
from unitrefine.search.outcomes import TrialOutcome
from unitrefine.search.search_space import Choice, parse_search_space
from unitrefine.search.trial_attrs import CV_STD_ATTR, DUPLICATE_ATTR, ERROR_ATTR, FOLD_SCORES_ATTR

SPACE = parse_search_space({
    "imputer": {"median": {}},
    "scaler": {"standard": {}, "none": {}},
    "resampler": {"none": {}},
    "classifier": {"logistic_regression": {"C": [0.1, 1.0]},
                   "random_forest": {"n_estimators": 10, "max_depth": [3, 8]}},
})
LR = {"imputer": "median", "scaler": "standard", "resampler": "none", "classifier": "logistic_regression",
      "logistic_regression.C": 0.1}
RF = {"imputer": "median", "scaler": "none", "resampler": "none", "classifier": "random_forest",
      "random_forest.max_depth": 8}
T0 = dt.datetime(2026, 11, 30, 7, 0, 0)
THRESHOLD = 0.4


def test_spec_params_flattens_a_pipeline_with_optunas_names() -> None:
    spec = {"imputer": Choice("median", {}), "scaler": Choice("none", {}),
            "classifier": Choice("random_forest", {"n_estimators": 10, "max_depth": None})}
    assert spec_params(spec) == {"imputer": "median", "scaler": "none", "classifier": "random_forest",
                                 "random_forest.n_estimators": 10, "random_forest.max_depth": None}
    assert spec_params(SPACE.spec_from_params(LR)) == LR


def trial(number: int, state: str, value: float | None, params: dict[str, Any], seconds: float | None = None,
          **attrs: Any) -> TrialOutcome:
    completed = None if seconds is None else T0 + dt.timedelta(seconds=seconds)
    return TrialOutcome("study", number, state, value, params, attrs, T0, completed)


TRIALS = [
    trial(0, "complete", 0.8, LR, 1.234, **{FOLD_SCORES_ATTR: [0.81234567, 0.78765433], CV_STD_ATTR: 0.0123}),
    trial(1, "complete", 0.9, RF, 2.0, **{FOLD_SCORES_ATTR: [0.9, 0.9], CV_STD_ATTR: 0.0}),
    trial(2, "pruned", None, {**LR, "scaler": "none"}, 0.5, **{FOLD_SCORES_ATTR: [0.51]}),
    trial(3, "complete", 0.8, {**RF, "random_forest.max_depth": 3}, 3.0,
          **{FOLD_SCORES_ATTR: [0.7, 0.9], CV_STD_ATTR: 0.1}),
    trial(4, "pruned", None, RF, 0.01, **{DUPLICATE_ATTR: 1}),
    trial(5, "fail", None, {"imputer": "median"}, 0.2, **{ERROR_ATTR: "fold 0: ValueError: bad"}),
    trial(6, "running", None, LR),
]


def test_leaderboard_lists_each_fitted_trial_best_first() -> None:
    """The duplicate (trial 4) is left out; equal scores by number; trials without a score last, by number."""
    board = leaderboard(TRIALS, SPACE)
    assert list(board.columns) == ["trial", "state", "cv_score", "cv_score_std", "n_folds", "fold_scores",
                                   "duration_s", "imputer", "scaler", "resampler", "classifier", "params", "error"]
    assert board["trial"].tolist() == [1, 0, 3, 2, 5, 6]
    assert board["state"].tolist() == ["complete", "complete", "complete", "pruned", "fail", "running"]
    assert board["cv_score"].tolist()[:3] == [0.9, 0.8, 0.8] and board["cv_score"][3:].isna().all()
    assert board["cv_score_std"].tolist()[:3] == [0.0, 0.0123, 0.1] and board["cv_score_std"][3:].isna().all()
    assert board["n_folds"].tolist() == [2, 2, 2, 1, 0, 0]
    assert board["fold_scores"].tolist() == ["[0.9, 0.9]", "[0.8123, 0.7877]", "[0.7, 0.9]", "[0.51]", "[]", "[]"]
    assert board["duration_s"].tolist()[:5] == [2.0, 1.23, 3.0, 0.5, 0.2] and pd.isna(board["duration_s"][5])
    assert board["classifier"].tolist()[:4] == ["random_forest", "logistic_regression", "random_forest",
                                                "logistic_regression"]
    assert board["scaler"].tolist()[:4] == ["none", "standard", "none", "none"]
    assert board[["imputer", "scaler", "resampler", "classifier"]].iloc[4].isna().all()  # params incomplete
    assert [json.loads(p) for p in board["params"]] == [
        {"random_forest.n_estimators": 10, "random_forest.max_depth": 8}, {"logistic_regression.C": 0.1},
        {"random_forest.n_estimators": 10, "random_forest.max_depth": 3}, {"logistic_regression.C": 0.1}, {},
        {"logistic_regression.C": 0.1}]
    assert board["error"].tolist()[4] == "fold 0: ValueError: bad" and board["error"].drop(index=4).isna().all()


def unit_table(seed: int, n: int, recordings: list[str]) -> UnitTable:
    """A binary table (``other``/``good``) whose classes overlap; the curators' labels are spelled differently."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=(3, n))
    y = ((a + 0.5 * b + rng.normal(0, 0.8, n)) > 0.3).astype(np.int64)
    X = pd.DataFrame({"a": a, "b": b, "c": c}).astype(np.float32)
    units = pd.DataFrame({"recording": [recordings[i % len(recordings)] for i in range(n)], "subject": "s0",
                          "unit_id": np.arange(n) * 2 + 1, "label": np.where(y == 1, "Good", "MUA")})
    return UnitTable(X, y, ("other", "good"), units)


@dataclass(frozen=True)
class Fitted:
    base: Pipeline
    model: Pipeline
    single: Pipeline
    held: UnitTable


@pytest.fixture(scope="module")
def fitted() -> Fitted:
    """A logistic regression deciding at P(good) >= 0.4, one fitted on fewer units as an ensemble's 'best single
    trial', and 40 held-out units of two recordings."""
    train = unit_table(1, 120, ["r0", "r1", "r2"])
    base = make_pipeline(StandardScaler(), LogisticRegression()).fit(train.X, train.y)
    few = train.subset(np.arange(30))
    single = make_pipeline(StandardScaler(), LogisticRegression()).fit(few.X, few.y)
    return Fitted(base, with_threshold(base, THRESHOLD, train.X, train.y), single, unit_table(2, 40, ["recA", "recB"]))


def test_predictions_give_each_unit_its_classes_and_probabilities(fitted: Fitted) -> None:
    held = fitted.held
    out = predictions(fitted.model, held)
    proba = fitted.base.predict_proba(held.X)
    assert list(out.columns) == ["recording", "unit_id", "label", "true_class", "predicted_class", "confidence",
                                 "probability_other", "probability_good"]
    assert out["recording"].tolist() == ["recA", "recB"] * 20
    assert out["unit_id"].tolist() == list(range(1, 80, 2))
    assert out["label"].tolist() == ["Good" if v else "MUA" for v in held.y]
    assert out["true_class"].tolist() == ["good" if v else "other" for v in held.y]
    assert out["predicted_class"].tolist() == ["good" if p >= THRESHOLD else "other" for p in proba[:, 1]]
    np.testing.assert_allclose(out["probability_other"], proba[:, 0])
    np.testing.assert_allclose(out["probability_good"], proba[:, 1])
    np.testing.assert_allclose(out["confidence"], proba.max(axis=1))


def test_evaluate_holdout_reports_scikit_learns_figures(fitted: Fitted) -> None:
    held, seed = fitted.held, 4
    result = evaluate_holdout(fitted.model, held, "balanced_accuracy", seed, 1, fitted.single, thresholded=True)
    y, proba = held.y, fitted.base.predict_proba(held.X)[:, 1]
    pred = (proba >= THRESHOLD).astype(int)
    assert (pred != (proba >= 0.5)).any()  # the threshold changes some decisions
    report = result.report
    assert report["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert report["balanced_accuracy_at_threshold_0.5"] == pytest.approx(balanced_accuracy_score(y, proba >= 0.5))
    assert report["best_single_trial_balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(y, fitted.single.predict(held.X)))
    assert report["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(y, pred)
    assert report["per_class"] == {
        c: {"precision": pytest.approx(precision[i]), "recall": pytest.approx(recall[i]),
            "f1": pytest.approx(f1[i]), "support": int(support[i])} for i, c in enumerate(["other", "good"])}
    recordings = held.units["recording"].to_numpy()
    assert report["per_recording"] == {
        r: {"balanced_accuracy": pytest.approx(balanced_accuracy_score(y[recordings == r], pred[recordings == r])),
            "n_units": 20} for r in ("recA", "recB")}
    pd.testing.assert_frame_equal(result.predictions, predictions(fitted.model, held))
    assert result.part is held

    drops = np.column_stack([
        permutation_importance(fitted.model, held.X, y, scoring="balanced_accuracy", n_repeats=1,
                               random_state=seed + r).importances[:, 0] for r in range(IMPORTANCE_REPEATS)])
    expected = pd.DataFrame({"feature": ["a", "b", "c"], "importance_mean": drops.mean(axis=1),
                             "importance_std": drops.std(axis=1)})
    expected = expected.sort_values("importance_mean", ascending=False, ignore_index=True)
    pd.testing.assert_frame_equal(result.importances, expected)
    assert result.importances["feature"][0] == "a"  # the feature the labels depend on most


def test_evaluate_holdout_adds_the_extra_figures_only_when_asked(fitted: Fitted) -> None:
    result = evaluate_holdout(fitted.base, fitted.held, "balanced_accuracy", 0, 1, None, thresholded=False)
    assert set(result.report) == {"balanced_accuracy", "per_class", "confusion_matrix", "per_recording"}


def train_result(board: pd.DataFrame, holdout: dict[str, Any] | None, ensemble: dict[int, int] | None = None,
                 run_id: str | None = None) -> TrainResult:
    return TrainResult(
        experiment="tiny", model_folder=Path("models") / "tiny", run_id=run_id, tracking_uri="sqlite:///mlflow.db",
        model_version="3", best_trial=1, best_cv_score=0.9, best_spec=SPACE.spec_from_params(RF), ensemble=ensemble,
        holdout=holdout, estimate={"optimistic": True, "balanced_accuracy": 0.9},
        trial_counts={"complete": 3, "pruned": 2}, wall_time_s=12.4, stage_seconds={"search": 3.25, "export": 1.0},
        study=optuna.create_study(), leaderboard=board,
        runs_page="http://127.0.0.1:5000/#/experiments/1" if run_id else None,
    )


def test_summary_names_the_exported_trial_and_the_held_out_recordings(fitted: Fitted) -> None:
    board = leaderboard(TRIALS, SPACE)
    report = evaluate_holdout(fitted.model, fitted.held, "balanced_accuracy", 0, 1, None, thresholded=False).report
    y, recordings = fitted.held.y, fitted.held.units["recording"].to_numpy()
    pred = (fitted.base.predict_proba(fitted.held.X)[:, 1] >= THRESHOLD).astype(int)
    per = {r: balanced_accuracy_score(y[recordings == r], pred[recordings == r]) for r in ("recA", "recB")}

    lines = summary(train_result(board, report), "balanced_accuracy").splitlines()
    assert lines[1] == "Study 'tiny': {'complete': 3, 'pruned': 2} trials; run took 12 s"
    assert lines[2] == "Stage times (s): search 3.2, export 1.0"
    assert lines[3] == "Top trials (CV balanced_accuracy):"
    top = lines[lines.index("Top trials (CV balanced_accuracy):") + 2: lines.index("Exported model: trial 1")]
    assert [int(row.split()[0]) for row in top] == [1, 0, 3]  # completed trials only, best first
    assert top[0].split()[1:3] == ["0.9000", "0.0000"]
    assert (f"Held-out recordings: balanced accuracy {balanced_accuracy_score(y, pred):.4f} "
            f"(recA {per['recA']:.3f}, recB {per['recB']:.3f})") in lines
    assert lines[-2].startswith("Expected balanced accuracy on new recordings: 0.900 — the best CV score")
    assert lines[-1] == f"Model folder: {Path('models') / 'tiny'}"


def test_summary_of_an_ensemble_without_held_out_recordings_tracked_in_mlflow() -> None:
    text = summary(train_result(leaderboard(TRIALS, SPACE), None, {1: 2, 0: 1}, "abc123"), "balanced_accuracy")
    lines = text.splitlines()
    assert "Exported model: soft-voting ensemble of trials {1: 2, 0: 1} (trial: weight)" in lines
    assert "No held-out recordings (cv.holdout_recordings is empty)." in lines
    assert not any(line.startswith("Held-out recordings") for line in lines)
    assert lines[-3:] == [
        "MLflow run: abc123 (model version 3)",
        "Open the UI: MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri sqlite:///mlflow.db "
        "--host 127.0.0.1 --port 5000 --workers 1",
        "then the runs, best cv_score first: http://127.0.0.1:5000/#/experiments/1",
    ]
