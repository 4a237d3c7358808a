"""``unitrefine.predict review=...``: the review queue in the output, the Phy column, the analyzer properties and
the errors. Real models fitted on seeded tables (:mod:`_tiny_models`), real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _tiny_models import TASKS, fit_model, metrics_frame, write_unlabelled
from conftest import copy_recordings, write_recording
from conftest import read_predictions as read
from conftest import run_predict as run
from spikeinterface.core import load_sorting_analyzer

from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import INFO_FILE, load_model_folder, write_json
from unitrefine.model.uncertainty import ReviewCalibration, centred, decision_threshold, review_order, review_scores

CLASSES = ["good", "mua", "noise"]


def calibrate(folder: Path, task: str, seed: int = 9) -> Path:
    """Keep in the folder's model_info.json a review calibration fitted on the model's predictions of another
    seeded recording (units it never saw), as a training run keeps the one its estimate's refits make."""
    pipeline, _ = load_model_folder(folder)
    classes, mapping = TASKS[task]
    files = write_recording(folder.parent / f"{folder.name}_calibration", n_units=150, seed=seed, spread=2.5)
    X = metrics_frame(files["metrics"])[list(pipeline.feature_names_in_)].astype("float32")
    groups = pd.read_csv(files["labels"], sep="\t")["group"].map(mapping)
    keep = groups.notna().to_numpy()
    y = groups[keep].map({c: i for i, c in enumerate(classes)}).to_numpy()
    proba = pipeline.predict_proba(X[keep])
    calibration = ReviewCalibration.fit(centred(proba, decision_threshold(pipeline)), y)
    info = json.loads((folder / INFO_FILE).read_text())
    write_json(folder / INFO_FILE,
               {**info, "review_ranking": "calibrated", "review_calibration": calibration.to_dict()})
    return folder


def as_old_folder(folder: Path, dest: Path) -> Path:
    """A copy of a model folder without review_calibration, as folders written before it."""
    shutil.copytree(folder, dest)
    info = json.loads((dest / INFO_FILE).read_text())
    info.pop("review_calibration", None)
    info.pop("review_ranking", None)
    write_json(dest / INFO_FILE, info)
    return dest


def stored_calibration(folder: Path) -> ReviewCalibration:
    return ReviewCalibration.from_dict(json.loads((folder / INFO_FILE).read_text())["review_calibration"])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A three-class model, a SUA-vs-all model deciding at P(good) >= 0.3, and a noise/neural + SUA/MUA cascade,
    each with a review calibration."""
    root = tmp_path_factory.mktemp("review_models")
    return {"three_class": calibrate(fit_model(root / "three_class", "three_class"), "three_class"),
            "thresholded": calibrate(fit_model(root / "thresholded", "sua_vs_all", threshold=0.3), "sua_vs_all"),
            "noise_vs_neural": calibrate(fit_model(root / "noise_vs_neural", "noise_vs_neural"), "noise_vs_neural"),
            "sua_vs_mua": calibrate(fit_model(root / "sua_vs_mua", "sua_vs_mua"), "sua_vs_mua")}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Two recordings' metrics tables: recA (30 units), recB (20)."""
    return write_unlabelled(tmp_path / "new", {"recA": (30, 11), "recB": (20, 12)})


def probabilities(table: pd.DataFrame, classes: list[str]) -> np.ndarray:
    return table[[f"probability_{c}" for c in classes]].to_numpy()


def margin(table: pd.DataFrame, classes: list[str]) -> np.ndarray:
    p = np.sort(probabilities(table, classes), axis=1)
    return 1 - (p[:, -1] - p[:, -2])


def calibrated_gain(table: pd.DataFrame, classes: list[str], folder: Path,
                    threshold: float | None = None) -> np.ndarray:
    """The calibrated expected gain of a review of each unit, from the predictions and the folder's calibration."""
    proba = probabilities(table, classes)
    decided = (proba[:, 1] >= threshold).astype(int) if threshold is not None else proba.argmax(axis=1)
    return review_scores(proba, decided, threshold, stored_calibration(folder))


def test_the_budget_is_over_all_units_of_the_command_worth_most_first(tmp_path: Path, models, data: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    run(model=models["three_class"], data=data, output=tmp_path / "plain.csv")
    with caplog.at_level("INFO", logger="unitrefine"):
        run(model=models["three_class"], data=data, output=tmp_path / "queued.csv", review=0.1)
    plain, queued = read(tmp_path / "plain.csv"), read(tmp_path / "queued.csv")
    assert list(queued.columns) == [*plain.columns, "needs_review", "review_rank"]
    pd.testing.assert_frame_equal(queued[plain.columns], plain)  # the predictions themselves are unchanged
    assert sorted(queued["review_rank"]) == list(range(1, 51))  # every unit has a rank
    assert queued["needs_review"].sum() == 5  # ceil(0.1 * 50), over both recordings together
    assert set(queued.loc[queued["needs_review"], "review_rank"]) == {1, 2, 3, 4, 5}
    # The ranks follow the calibrated expected gain of a review over all units, whatever the recording (n_c
    # counted over all 50; ties: the earlier unit first), with the model's labels as its decision.
    assert (np.array(CLASSES)[probabilities(queued, CLASSES).argmax(axis=1)] == queued["predicted_label"]).all()
    scores = calibrated_gain(queued, CLASSES, models["three_class"])
    assert queued.sort_values("review_rank").index.tolist() == review_order(scores).tolist()
    chosen = queued["needs_review"].to_numpy()
    assert scores[chosen].min() >= scores[~chosen].max()
    assert "ranked by the expected balanced-accuracy gain of a review" in caplog.text
    # Not the margin's queue on these units.
    by_margin = np.argsort(-margin(queued, CLASSES), kind="stable").tolist()
    assert queued.sort_values("review_rank").index.tolist() != by_margin


def test_a_thresholded_model_ranks_with_its_own_decision_and_centred_probabilities(tmp_path: Path, models,
                                                                                    data: Path) -> None:
    got = run(model=models["thresholded"], data=data, output=tmp_path / "p.csv", review=8).predictions
    p = got["probability_good"].to_numpy()
    assert ((p >= 0.3) == (got["predicted_label"] == "good")).all()  # the model's decision is at its threshold
    scores = calibrated_gain(got, ["other", "good"], models["thresholded"], threshold=0.3)
    assert got["needs_review"].sum() == 8
    assert got.sort_values("review_rank").index.tolist() == review_order(scores).tolist()


def test_an_old_thresholded_model_queues_the_units_nearest_its_own_threshold(tmp_path: Path, models,
                                                                             data: Path) -> None:
    old = as_old_folder(models["thresholded"], tmp_path / "old")
    got = run(model=old, data=data, output=tmp_path / "p.csv", review=8).predictions
    p = got["probability_good"].to_numpy()
    queued = got["needs_review"].to_numpy()
    assert queued.sum() == 8
    # Every queued unit is nearer 0.3 (on the threshold-centred scale) than every unit left out; not so around 0.5.
    q = np.where(p < 0.3, p / 0.6, 0.5 + 0.5 * (p - 0.3) / 0.7)
    assert np.abs(q - 0.5)[queued].max() <= np.abs(q - 0.5)[~queued].min()
    assert np.abs(p - 0.5)[queued].max() > np.abs(p - 0.5)[~queued].min()


def test_an_old_model_folder_keeps_the_margin_ranking(tmp_path: Path, models, data: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    old = as_old_folder(models["three_class"], tmp_path / "old")
    with caplog.at_level("INFO", logger="unitrefine"):
        got = run(model=old, data=data, output=tmp_path / "p.csv", review=0.1).predictions
    expected = np.argsort(-margin(got, CLASSES), kind="stable")
    assert got.sort_values("review_rank").index.tolist() == expected.tolist()
    assert got["needs_review"].sum() == 5
    assert "ranked by the models' margin (no review calibration in model_info.json)" in caplog.text


def test_a_cascade_queues_by_its_most_doubtful_stage(tmp_path: Path, models, data: Path) -> None:
    cascade = [models["noise_vs_neural"], models["sua_vs_mua"]]
    got = run(model=cascade, data=data, output=tmp_path / "p.csv", review="100%").predictions
    first = calibrated_gain(got, ["neural", "noise"], cascade[0])
    neural = got["probability_sua"].notna().to_numpy()
    second = np.full(len(got), -np.inf)  # each stage counts its labels over the units it saw
    second[neural] = calibrated_gain(got[neural], ["mua", "sua"], cascade[1])
    worst = np.maximum(first, second)
    assert got["needs_review"].all()
    assert got.sort_values("review_rank").index.tolist() == np.argsort(-worst, kind="stable").tolist()


def test_a_cascade_with_one_old_model_ranks_both_by_the_margin(tmp_path: Path, models, data: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    old = as_old_folder(models["sua_vs_mua"], tmp_path / "old")
    with caplog.at_level("WARNING", logger="unitrefine"):
        got = run(model=[models["noise_vs_neural"], old], data=data, output=tmp_path / "p.csv",
                  review="100%").predictions
    assert "only one of the cascade's models has a review calibration" in caplog.text
    first = margin(got, ["neural", "noise"])
    second = np.where(got["probability_sua"].isna(), -np.inf,
                      1 - np.abs(got["probability_sua"] - got["probability_mua"]))
    worst = np.maximum(first, second)
    assert got.sort_values("review_rank").index.tolist() == np.argsort(-worst, kind="stable").tolist()


def test_an_unreadable_calibration_fails_before_any_work(tmp_path: Path, models, data: Path) -> None:
    broken = as_old_folder(models["three_class"], tmp_path / "broken")
    info = json.loads((broken / INFO_FILE).read_text())
    two = stored_calibration(models["thresholded"]).to_dict()  # two classes, for a three-class model
    for value, message in ((two, "review_calibration has 2 classes, the model 3"),
                           ({"method": "isotonic", "knots": "x"}, "review_calibration is not a calibration")):
        write_json(broken / INFO_FILE, {**info, "review_calibration": value})
        before = sorted(p.name for p in tmp_path.rglob("*"))
        with pytest.raises(UnitRefineError) as excinfo:
            run(model=broken, data=data, output=tmp_path / "p.csv", review=5)
        assert f"model_info.json of model {broken}" in str(excinfo.value) and message in str(excinfo.value)
        assert "delete the key review_calibration" in str(excinfo.value)
        assert sorted(p.name for p in tmp_path.rglob("*")) == before and not (tmp_path / "p.csv").exists()
    # Without review= the calibration is not read: the predictions are written as before.
    assert run(model=broken, data=data, output=tmp_path / "p.csv").output.is_file()


def test_a_trained_model_queues_by_the_calibration_its_run_made(tmp_path: Path, synthetic_bank: Path,
                                                                synthetic_models: dict[str, Path]) -> None:
    model = synthetic_models["three_class"]
    info = json.loads((model / INFO_FILE).read_text())
    assert info["review_ranking"] == "calibrated" and info["estimate_new_recordings"]["review_ranking"] == "calibrated"
    folders = copy_recordings(synthetic_bank, tmp_path, [4, 5])
    got = run(model=model, data=folders[0] / "analyzer", output=tmp_path / "p.csv", review="100%").predictions
    pipeline, _ = load_model_folder(model)
    proba = probabilities(got, CLASSES)
    scores = review_scores(proba, proba.argmax(axis=1), decision_threshold(pipeline), stored_calibration(model))
    assert got.sort_values("review_rank").index.tolist() == review_order(scores).tolist()
    # The same folder without its calibration (as an older version wrote it) still predicts, ranked by the margin.
    old = as_old_folder(model, tmp_path / "old")
    again = run(model=old, data=folders[1] / "analyzer", output=tmp_path / "q.csv", review=3).predictions
    expected = np.argsort(-margin(again, CLASSES), kind="stable")
    assert again.sort_values("review_rank").index.tolist() == expected.tolist() and again["needs_review"].sum() == 3


def test_phy_review_column_lists_the_budgets_units_by_rank(tmp_path: Path, models, data: Path) -> None:
    phy = tmp_path / "phy"
    phy.mkdir()
    (phy / "params.py").write_text("dat_path = 'recording.dat'\n")
    got = run(model=models["three_class"], data=data / "recA.csv", output=tmp_path / "p.csv", phy_folder=phy,
              review=4).predictions
    review = pd.read_csv(phy / "cluster_unitrefine_review.tsv", sep="\t", dtype={"cluster_id": str})
    assert list(review.columns) == ["cluster_id", "unitrefine_review"]
    queued = got[got["needs_review"]].sort_values("review_rank")
    assert review["cluster_id"].tolist() == queued["unit_id"].tolist()
    assert review["unitrefine_review"].tolist() == [1, 2, 3, 4]
    assert not [p.name for p in phy.iterdir() if ".partial" in p.name]
    # With review= an existing review file needs overwrite=true; without review= it is neither written nor checked.
    with pytest.raises(UnitRefineError, match="cluster_unitrefine_review.tsv already exist"):
        run(model=models["three_class"], data=data / "recA.csv", output=tmp_path / "q.csv", phy_folder=phy, review=4)
    assert not (tmp_path / "q.csv").exists()
    other = tmp_path / "phy2"
    other.mkdir()
    plain = run(model=models["three_class"], data=data / "recA.csv", output=tmp_path / "r.csv", phy_folder=other)
    assert sorted(p.name for p in other.iterdir()) == ["cluster_unitrefine_label.tsv",
                                                       "cluster_unitrefine_probability.tsv"]
    assert "needs_review" not in plain.predictions.columns


def test_review_properties_on_an_analyzer(tmp_path: Path, synthetic_bank: Path, models) -> None:
    folder = copy_recordings(synthetic_bank, tmp_path, [4])[0]
    got = run(model=models["three_class"], data=folder / "analyzer", output=tmp_path / "p.csv", review=3).predictions
    analyzer = load_sorting_analyzer(folder / "analyzer")  # from disk: SpikeInterface saved the properties
    by_id = got.set_index("unit_id").reindex([str(u) for u in analyzer.unit_ids])
    assert list(analyzer.get_sorting_property("classifier_needs_review")) == by_id["needs_review"].tolist()
    assert list(analyzer.get_sorting_property("classifier_review_rank")) == by_id["review_rank"].tolist()
    assert sum(analyzer.get_sorting_property("classifier_needs_review")) == 3


@pytest.mark.parametrize(
    ("review", "message"),
    [(-2, "review=-2 is negative"), ("150%", "review=150% is over 100 %"), (2.5, "review=2.5: above 1"),
     ("some", "review=some is not a number"), (51, "review=51 asks for more units than data=")],
)
def test_bad_budgets_fail_before_any_work_and_write_nothing(tmp_path: Path, models, data: Path, review: Any,
                                                            message: str) -> None:
    with pytest.raises(UnitRefineError) as excinfo:
        run(model=models["three_class"], data=data, output=tmp_path / "p.csv", review=review)
    assert message in str(excinfo.value)
    assert not (tmp_path / "p.csv").exists()


def test_a_count_larger_than_an_analyzer_fails_before_its_metrics_are_computed(tmp_path: Path, synthetic_bank: Path,
                                                                             models) -> None:
    folder = copy_recordings(synthetic_bank, tmp_path, [5])[0]
    with pytest.raises(UnitRefineError, match=r"review=11 asks for more units than data=.* holds \(10\)"):
        run(model=models["three_class"], data=folder / "analyzer", output=tmp_path / "p.csv", review=11)
    assert not (tmp_path / "p.csv").exists()
    assert not load_sorting_analyzer(folder / "analyzer").has_extension("quality_metrics")  # nothing computed or saved
