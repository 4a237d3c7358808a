"""The shared uncertainty ranking (:mod:`unitrefine.model.uncertainty`): scores, review order, budgets, curated
scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny_models import fit_model, metrics_frame, write_unlabelled
from sklearn.metrics import balanced_accuracy_score

from unitrefine.apply import active
from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import load_model_folder
from unitrefine.model import uncertainty as unc
from unitrefine.model.uncertainty import (
    ReviewBudget,
    Stage,
    curated_labels,
    curated_scores,
    parse_review_budget,
    review_count,
    review_order,
    review_ranks,
    table_uncertainty,
)


def test_suggest_uses_the_shared_scores() -> None:
    """One implementation: suggest's names are the shared module's functions, not copies."""
    for name in ("uncertainty", "centre_on_threshold", "decision_threshold", "STRATEGIES", "table_uncertainty"):
        assert getattr(active, name) is getattr(unc, name)


# ------------------------------------------------------------------------------------------------------------
# Curated scores
# ------------------------------------------------------------------------------------------------------------


def test_curated_scores_replace_the_most_uncertain_labels_by_the_truth() -> None:
    y_true = np.array(["a", "a", "a", "b", "b", "b"])
    y_model = np.array(["a", "b", "b", "b", "a", "b"])  # units 1, 2 and 4 wrong
    scores = np.array([0.1, 0.9, 0.2, 0.3, 0.8, 0.05])  # order: 1, 4, 3, 2, 0, 5
    got = curated_scores(y_true, y_model, scores, [0.0, 1 / 6, 2 / 6, 0.5, 4 / 6, 1.0])
    # 0: recall a 1/3, b 2/3; after unit 1: a 2/3; after unit 4: b 3/3; unit 3 was right; then unit 2: a 3/3.
    assert list(got) == [0.0, 1 / 6, 2 / 6, 0.5, 4 / 6, 1.0]
    np.testing.assert_allclose(list(got.values()), [0.5, 2 / 3 * 0.5 + 0.5 * 2 / 3, (2 / 3 + 1) / 2,
                                                    (2 / 3 + 1) / 2, 1.0, 1.0])
    assert got[0.0] == balanced_accuracy_score(y_true, y_model)


def test_a_fraction_is_rounded_up_and_ties_keep_the_units_order() -> None:
    assert [review_count(f, 30) for f in (0.0, 0.1, 0.11, 0.2, 1.0)] == [0, 3, 4, 6, 30]  # 0.1 * 30 is 3, not 4
    assert review_count(0.05, 10) == 1
    # Equal scores: the earlier unit first; NaN last.
    assert review_order(np.array([0.5, np.nan, 0.5, 0.9, 0.5])).tolist() == [3, 0, 2, 4, 1]
    assert review_ranks(np.array([0.5, np.nan, 0.5, 0.9, 0.5])).tolist() == [2, 5, 3, 1, 4]
    y_true, y_model = np.array(["a", "b", "a", "b"]), np.array(["b", "a", "b", "a"])  # all wrong
    ties = np.zeros(4)
    assert curated_labels(y_true, y_model, ties, 1).tolist() == ["a", "a", "b", "a"]  # the first unit only
    # 0.25 of 4 units is one unit, 0.26 rounds up to two.
    got = curated_scores(y_true, y_model, ties, [0.25, 0.26])
    assert got[0.25] == pytest.approx(0.25) and got[0.26] == pytest.approx(0.5)


def test_curated_scores_errors() -> None:
    with pytest.raises(ValueError, match="same, non-zero length"):
        curated_scores(np.array(["a", "b"]), np.array(["a"]), np.zeros(2), [0.1])
    with pytest.raises(ValueError, match="fraction must be in"):
        curated_scores(np.array(["a", "b"]), np.array(["a", "b"]), np.zeros(2), [1.2])


def test_reviewing_a_real_models_doubtful_units_beats_reviewing_random_ones(tmp_path: Path) -> None:
    """A model trained on seeded overlapping data, applied to a new recording: the curated score never falls as
    the budget grows, and the model's own uncertainty picks units worth more than a random pick of the same size."""
    folder = fit_model(tmp_path / "model", "three_class")
    pipeline, _ = load_model_folder(folder)
    data = write_unlabelled(tmp_path / "new", {"rec": (200, 21)})
    X = metrics_frame(str(data / "rec.csv"))[list(pipeline.feature_names_in_)].astype("float32")
    y_true = pd.read_csv(tmp_path / "new_truth" / "rec" / "cluster_group.tsv", sep="\t")["group"].to_numpy()
    proba = pipeline.predict_proba(X)
    y_model = np.array(["good", "mua", "noise"])[pipeline.predict(X)]
    fractions = [0.0, 0.05, 0.1, 0.2, 0.3, 1.0]
    ours = curated_scores(y_true, y_model, unc.model_uncertainty(proba), fractions)
    values = list(ours.values())
    assert all(b >= a for a, b in zip(values, values[1:])) and values[-1] == 1.0 and values[0] < 0.8
    rng = np.random.default_rng(0)
    random = np.mean([list(curated_scores(y_true, y_model, rng.random(len(y_true)), fractions).values())
                      for _ in range(20)], axis=0)
    assert ours[0.1] - ours[0.0] > 1.5 * (random[2] - random[0])  # measured: 0.050 against 0.024
    assert ours[0.3] > random[4]


# ------------------------------------------------------------------------------------------------------------
# Scores of a predictions table
# ------------------------------------------------------------------------------------------------------------


def test_a_thresholded_binary_stage_is_most_uncertain_at_its_threshold() -> None:
    table = pd.DataFrame({"probability_other": [0.5, 0.7, 0.9], "probability_good": [0.5, 0.3, 0.1]})
    at_half = table_uncertainty(table, [Stage(["other", "good"])])
    np.testing.assert_allclose(at_half, [1.0, 0.6, 0.2])
    at_03 = table_uncertainty(table, [Stage(["other", "good"], threshold=0.3)])
    np.testing.assert_allclose(at_03, [1 - abs(2 * (0.5 + 0.5 * 0.2 / 0.7) - 1), 1.0, 1 - abs(2 * (0.1 / 0.6) - 1)])
    assert review_order(at_03).tolist() == [1, 0, 2]


def test_a_cascade_unit_is_as_doubtful_as_its_most_doubtful_stage() -> None:
    table = pd.DataFrame({
        "probability_neural": [0.55, 0.95, 0.1], "probability_noise": [0.45, 0.05, 0.9],
        "probability_mua": [0.1, 0.5, np.nan], "probability_sua": [0.9, 0.5, np.nan],  # the third is noise
    })
    got = table_uncertainty(table, [Stage(["neural", "noise"]), Stage(["mua", "sua"])])
    np.testing.assert_allclose(got, [0.9, 1.0, 0.2])
    three = pd.DataFrame({"probability_good": [0.5, 0.4], "probability_mua": [0.3, 0.35],
                          "probability_noise": [0.2, 0.25]})
    np.testing.assert_allclose(table_uncertainty(three, [Stage(["good", "mua", "noise"])]), [0.8, 0.95])


# ------------------------------------------------------------------------------------------------------------
# review= values
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "budget", "n_of_40"),
    [(None, None, None), (0.1, ReviewBudget(fraction=0.1), 4), ("10%", ReviewBudget(fraction=0.1), 4),
     ("100%", ReviewBudget(fraction=1.0), 40), (0.01, ReviewBudget(fraction=0.01), 1), (12, ReviewBudget(count=12), 12),
     (1, ReviewBudget(count=1), 1), (20.0, ReviewBudget(count=20), 20), (0, ReviewBudget(count=0), 0)],
)
def test_review_budgets(value: object, budget: ReviewBudget | None, n_of_40: int | None) -> None:
    got = parse_review_budget(value)
    assert got == budget
    assert (None if got is None else got.n_units(40)) == n_of_40


@pytest.mark.parametrize(
    ("value", "message"),
    [(-0.1, "review=-0.1 is negative"), (-3, "review=-3 is negative"), ("150%", "review=150% is over 100 %"),
     (1.5, "review=1.5: above 1 the budget is a number of units, which must be whole"),
     ("ten", "review=ten is not a number"),
     (True, "review=True is not a review budget"), ("nan", "review=nan is negative or not finite")],
)
def test_bad_review_budgets_name_the_option_and_say_what_to_write(value: object, message: str) -> None:
    with pytest.raises(UnitRefineError) as excinfo:
        parse_review_budget(value)
    assert message in str(excinfo.value) and "review=0.1" in str(excinfo.value) and "review=50" in str(excinfo.value)


def test_a_count_larger_than_the_data_is_refused() -> None:
    unc.check_budget(ReviewBudget(count=40), 40, "data=x")
    with pytest.raises(UnitRefineError, match=r"review=41 asks for more units than data=x holds \(40\)"):
        unc.check_budget(ReviewBudget(count=41), 40, "data=x")
