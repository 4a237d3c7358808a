"""``unitrefine.predict review=...``: the review queue in the output, the Phy column, the analyzer properties and
the errors. Real models fitted on seeded tables (:mod:`_tiny_models`), real files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _tiny_models import fit_model, write_unlabelled
from conftest import copy_recordings, snapshot
from conftest import read_predictions as read
from conftest import run_predict as run
from spikeinterface.core import load_sorting_analyzer

from unitrefine.errors import UnitRefineError

CLASSES = ["good", "mua", "noise"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A three-class model, a SUA-vs-all model deciding at P(good) >= 0.3, and a noise/neural + SUA/MUA cascade."""
    root = tmp_path_factory.mktemp("review_models")
    return {"three_class": fit_model(root / "three_class", "three_class"),
            "thresholded": fit_model(root / "thresholded", "sua_vs_all", threshold=0.3),
            "noise_vs_neural": fit_model(root / "noise_vs_neural", "noise_vs_neural"),
            "sua_vs_mua": fit_model(root / "sua_vs_mua", "sua_vs_mua")}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Two recordings' metrics tables: recA (30 units), recB (20)."""
    return write_unlabelled(tmp_path / "new", {"recA": (30, 11), "recB": (20, 12)})


def margin(table: pd.DataFrame, classes: list[str]) -> np.ndarray:
    p = np.sort(table[[f"probability_{c}" for c in classes]].to_numpy(), axis=1)
    return 1 - (p[:, -1] - p[:, -2])


def test_the_budget_is_over_all_units_of_the_command_most_uncertain_first(tmp_path: Path, models, data: Path) -> None:
    run(model=models["three_class"], data=data, output=tmp_path / "plain.csv")
    run(model=models["three_class"], data=data, output=tmp_path / "queued.csv", review=0.1)
    plain, queued = read(tmp_path / "plain.csv"), read(tmp_path / "queued.csv")
    assert list(queued.columns) == [*plain.columns, "needs_review", "review_rank"]
    pd.testing.assert_frame_equal(queued[plain.columns], plain)  # the predictions themselves are unchanged
    assert sorted(queued["review_rank"]) == list(range(1, 51))  # every unit has a rank
    assert queued["needs_review"].sum() == 5  # ceil(0.1 * 50), over both recordings together
    assert set(queued.loc[queued["needs_review"], "review_rank"]) == {1, 2, 3, 4, 5}
    # The ranks follow the model's margin over all units, whatever the recording (ties: the earlier unit first).
    expected = np.argsort(-margin(queued, CLASSES), kind="stable")
    assert queued.sort_values("review_rank").index.tolist() == expected.tolist()
    scores, chosen = margin(queued, CLASSES), queued["needs_review"].to_numpy()
    assert scores[chosen].min() >= scores[~chosen].max()


def test_a_thresholded_model_queues_the_units_nearest_its_own_threshold(tmp_path: Path, models, data: Path) -> None:
    got = run(model=models["thresholded"], data=data, output=tmp_path / "p.csv", review=8).predictions
    p = got["probability_good"].to_numpy()
    queued = got["needs_review"].to_numpy()
    assert queued.sum() == 8
    # Every queued unit is nearer 0.3 (on the threshold-centred scale) than every unit left out; not so around 0.5.
    q = np.where(p < 0.3, p / 0.6, 0.5 + 0.5 * (p - 0.3) / 0.7)
    assert np.abs(q - 0.5)[queued].max() <= np.abs(q - 0.5)[~queued].min()
    assert np.abs(p - 0.5)[queued].max() > np.abs(p - 0.5)[~queued].min()


def test_a_cascade_queues_by_its_most_doubtful_stage(tmp_path: Path, models, data: Path) -> None:
    got = run(model=[models["noise_vs_neural"], models["sua_vs_mua"]], data=data, output=tmp_path / "p.csv",
              review="100%").predictions
    first = margin(got, ["neural", "noise"])
    second = np.where(got["probability_sua"].isna(), -np.inf,
                      1 - np.abs(got["probability_sua"] - got["probability_mua"]))
    worst = np.maximum(first, second)
    assert got["needs_review"].all()
    assert got.sort_values("review_rank").index.tolist() == np.argsort(-worst, kind="stable").tolist()


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
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError, match=f"{phy / 'cluster_unitrefine_review.tsv'}.* already exist"):
        run(model=models["three_class"], data=data / "recA.csv", output=tmp_path / "q.csv", phy_folder=phy, review=4)
    assert snapshot(tmp_path) == before  # no q.csv, the Phy files as they were
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
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError) as excinfo:
        run(model=models["three_class"], data=data, output=tmp_path / "p.csv", review=review)
    assert message in str(excinfo.value)
    assert snapshot(tmp_path) == before


def test_a_count_larger_than_an_analyzer_fails_before_its_metrics_are_computed(tmp_path: Path, synthetic_bank: Path,
                                                                             models) -> None:
    folder = copy_recordings(synthetic_bank, tmp_path, [5])[0]
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError, match=r"review=11 asks for more units than data=.* holds \(10\)"):
        run(model=models["three_class"], data=folder / "analyzer", output=tmp_path / "p.csv", review=11)
    assert snapshot(tmp_path) == before  # no predictions, the analyzer as it was
    assert not load_sorting_analyzer(folder / "analyzer").has_extension("quality_metrics")  # nothing computed or saved
