"""Registry promotion end to end: real trainings, a real MLflow registry in tmp_path, real decisions."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_config
from mlflow.tracking import MlflowClient

from unitrefine.errors import UnitRefineError
from unitrefine.promote import promote
from unitrefine.run.training import train

STUMP = {"random_forest": {"n_estimators": 1, "max_depth": 1, "max_features": 1, "bootstrap": False}}
FOREST = {"random_forest": {"n_estimators": 60, "max_depth": 6}}


def space(classifier: dict) -> dict:
    return {"imputer": {"median": {}}, "scaler": {"none": {}}, "resampler": {"none": {}}, "classifier": classifier}


def test_gate_promote_win_lose_force_and_mismatch(tmp_path: Path, tiny_recordings) -> None:
    base = ["search.n_trials=1", "search.n_jobs=1", "cv.n_splits=3", "cv.holdout_recordings=[rec3]",
            "registry.n_bootstrap=200", "search.enqueue_defaults=false", "search.resume=false"]

    def run(classifier: dict, *extra: str, **changes):
        cfg = make_config(tmp_path, tiny_recordings, [*base, *extra], search_space=space(classifier), **changes)
        return cfg, train(cfg)

    cfg, weak1 = run(STUMP)
    client = MlflowClient(weak1.tracking_uri)
    alias = lambda a: str(client.get_model_version_by_alias("smoke", a).version)  # noqa: E731
    assert alias("challenger") == weak1.model_version == "1"
    assert client.get_model_version("smoke", "1").tags["gate"] == "passed"

    first = promote(cfg)  # no champion yet: the passing challenger becomes champion
    assert first.promoted and first.reason == "no champion yet" and alias("champion") == "1"

    _, strong = run(FOREST)
    win = promote(cfg)
    assert win.promoted and win.champion == "1" and win.challenger == strong.model_version == "2"
    assert win.challenger_score > win.champion_score and win.ci[0] <= win.delta <= win.ci[1]
    assert alias("champion") == "2"
    tags = client.get_model_version("smoke", "2").tags
    assert tags["promotion.previous_champion"] == "1" and tags["promotion.decision"].startswith("promoted")
    assert client.get_model_version("smoke", "1").tags["promotion.replaced_by"] == "2"

    _, weak2 = run(STUMP)
    lose = promote(cfg)
    assert not lose.promoted and lose.delta < 0 and alias("champion") == "2"
    assert client.get_model_version("smoke", weak2.model_version).tags["promotion.decision"].startswith("rejected")

    forced = promote(cfg, force=True)
    assert forced.promoted and forced.reason == "forced" and alias("champion") == weak2.model_version

    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id],
                              filter_string="tags.`unitrefine.promotion` != ''")
    assert len(runs) == 4 and all("challenger_balanced_accuracy" in r.data.metrics for r in runs)

    _, narrow = run(FOREST, **{"dataset.metric_names": ["snr", "firing_rate"]})
    with pytest.raises(UnitRefineError, match="feature sets differ"):
        promote(cfg)
    assert alias("champion") == weak2.model_version

    _, failing = run(FOREST, "registry.gate_min_score=1.01")
    assert client.get_model_version("smoke", failing.model_version).tags["gate"].startswith("failed")
    assert alias("challenger") == narrow.model_version  # the failing version got no alias


def test_promote_without_challenger_or_evaluation_data_is_a_clear_error(tmp_path: Path, tiny_recordings) -> None:
    cfg = make_config(tmp_path, tiny_recordings, ["search.n_trials=1", "search.resume=false"])
    with pytest.raises(UnitRefineError, match="no 'challenger' version"):
        promote(cfg)
    train(cfg)  # registers a challenger; nothing is held out here
    train(cfg)
    client = MlflowClient(cfg.tracking.uri or f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    client.set_registered_model_alias("smoke", "champion", "1")
    with pytest.raises(UnitRefineError, match="has no held-out predictions"):
        promote(cfg)


def test_promote_on_an_evaluation_dataset_scores_the_exported_models(tmp_path: Path, tiny_recordings) -> None:
    """With registry.evaluation_dataset, the exported models themselves are scored on it."""
    from unitrefine.data.loading import load_dataset
    from unitrefine.export.folder import load_model_folder
    from unitrefine.search.evaluation import balanced_accuracy

    train_on = tiny_recordings[:3]
    extra = ["search.n_trials=1", "search.enqueue_defaults=false", "registry.n_bootstrap=100", "search.resume=false"]
    cfg = make_config(tmp_path, train_on, extra, search_space=space(STUMP),
                      registry__evaluation_dataset={"name": "eval", "recordings": [tiny_recordings[3]]})
    weak = train(cfg)
    promote(cfg)
    strong = train(make_config(tmp_path, train_on, extra, search_space=space(FOREST),
                               registry__evaluation_dataset={"name": "eval", "recordings": [tiny_recordings[3]]}))
    decision = promote(cfg)
    table = load_dataset(cfg.registry.evaluation_dataset, cfg.task, cfg.root_dir)
    scores = []
    for result in (weak, strong):
        model, info = load_model_folder(result.model_folder)
        scores.append(balanced_accuracy(table.y, model.predict(table.X[info["features"]])))
    assert (decision.champion_score, decision.challenger_score) == pytest.approx(tuple(scores))
    assert decision.promoted == (scores[1] > scores[0])


@pytest.mark.parametrize("given", ["maybe", "1"])
def test_force_other_than_true_or_false_is_refused_before_any_work(tmp_path: Path, given: str) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "unitrefine.promote", "+experiment=smoke", f"root={tmp_path}",
                           f"force={given}"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    shown = "'maybe'" if given == "maybe" else "1"
    assert proc.returncode == 2 and f"force must be true or false (got {shown})" in proc.stderr
    assert "Traceback" not in proc.stderr and list(tmp_path.iterdir()) == []
