"""The shared rankings (:mod:`unitrefine.model.uncertainty`): uncertainty scores, the review queue's calibrated
expected gain, review order, budgets, curated scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny_models import fit_model, metrics_frame, write_unlabelled
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import balanced_accuracy_score

from unitrefine.apply import active
from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import load_model_folder
from unitrefine.model import uncertainty as unc
from unitrefine.model.uncertainty import (
    ReviewBudget,
    ReviewCalibration,
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
    if got is not None:
        assert got.n_units(40) == n_of_40


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


# ------------------------------------------------------------------------------------------------------------
# The review queue's calibrated ranking
# ------------------------------------------------------------------------------------------------------------


def _identity(n_classes: int) -> ReviewCalibration:
    """A calibration that keeps the probabilities as they are (then renormalises them)."""
    return ReviewCalibration(((((0.0, 1.0), (0.0, 1.0)),) * n_classes))


def test_the_calibration_round_trips_through_json_and_is_sklearns_isotonic_regression() -> None:
    rng = np.random.default_rng(3)
    proba = rng.dirichlet([1.0, 1.0, 1.0], size=300)
    y = np.array([rng.choice(3, p=p) for p in proba])  # calibrated-ish labels: the fit has many knots
    calibration = ReviewCalibration.fit(proba, y)
    new = np.vstack([rng.dirichlet([1.0, 1.0, 1.0], size=40), [[1.2, -0.1, 0.0]]])  # beyond the fit's range: clipped
    iso = np.column_stack([IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(proba[:, c], y == c)
                           .predict(new[:, c]) for c in range(3)])
    expected = iso / iso.sum(axis=1, keepdims=True)
    stored = json.loads(json.dumps(calibration.to_dict()))
    assert stored["method"] == "isotonic" and len(stored["knots"]) == 3 and len(stored["knots"][0]["x"]) > 5
    back = ReviewCalibration.from_dict(stored)
    assert back == calibration  # what the run scored with is what model_info.json keeps
    np.testing.assert_allclose(back.apply(new), expected, rtol=0, atol=2e-6)  # y kept to 6 decimals
    np.testing.assert_allclose(back.apply(new).sum(axis=1), 1.0)


@pytest.mark.parametrize(
    ("stored", "problem"),
    [({"method": "platt", "knots": []}, "method 'platt'"), ({"method": "isotonic"}, "'knots'"),
     ({"method": "isotonic", "knots": [{"x": [0, 1], "y": [0]}, {"x": [0], "y": [1]}]}, "equal, non-empty"),
     ({"method": "isotonic", "knots": [{"x": [1, 0], "y": [0, 1]}] * 2}, "x increasing"), ([1, 2], "")],
)
def test_an_unreadable_calibration_names_the_file_and_the_key(stored: object, problem: str) -> None:
    with pytest.raises(UnitRefineError) as excinfo:
        ReviewCalibration.from_dict(stored, "model_info.json of model m1")
    message = str(excinfo.value)
    assert message.startswith("model_info.json of model m1: review_calibration is not a calibration")
    assert problem in message and "delete the key review_calibration" in message


def test_the_expected_gain_weights_a_likely_error_in_a_rarely_given_class_more_than_the_margin_does() -> None:
    # Nine units labelled 0, one labelled 1. Unit 0 (labelled 1, the rare label) is nearer the boundary, but an
    # error there costs one ninth of class 0's recall; unit 1 (labelled 0) may be the one missed unit of class 1.
    q = np.array([[0.45, 0.55], [0.7, 0.3], *[[0.95, 0.05]] * 8])
    predicted = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    margin = unc.uncertainty(q)
    gain = unc.expected_gain(q, predicted)
    assert review_order(margin)[:2].tolist() == [0, 1]
    assert review_order(gain)[:2].tolist() == [1, 0]
    np.testing.assert_allclose(gain[:2], [0.45 / 9, 0.3 / 1])
    # Three classes: every class other than the model's counts, each over its own count.
    three = unc.expected_gain(np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]), np.array([0, 1]))
    np.testing.assert_allclose(three, [0.3 / 1 + 0.2 / 1, 0.1 / 1 + 0.3 / 1])


def test_review_scores_are_the_margin_without_a_calibration_and_the_calibrated_gain_with_one() -> None:
    proba = np.array([[0.75, 0.25], [0.6, 0.4], [0.2, 0.8], [0.9, 0.1]])
    decided = unc.model_decision(proba, 0.3)
    assert decided.tolist() == [0, 1, 1, 0]  # P(positive) >= 0.3, as FixedThresholdClassifier
    np.testing.assert_allclose(unc.review_scores(proba, decided, 0.3, None), unc.model_uncertainty(proba, 0.3))
    rng = np.random.default_rng(1)
    cal_p = rng.dirichlet([1.0, 1.0], size=100)
    calibration = ReviewCalibration.fit(cal_p, (rng.random(100) < cal_p[:, 1]).astype(int))
    expected = unc.expected_gain(calibration.apply(unc.centre_on_threshold(proba, 0.3)), decided)
    np.testing.assert_allclose(unc.review_scores(proba, decided, 0.3, calibration), expected)


def test_a_calibrated_cascade_scores_each_stage_over_the_units_it_saw_and_a_mixed_one_by_the_margin() -> None:
    table = pd.DataFrame({
        "probability_neural": [0.55, 0.95, 0.1, 0.8], "probability_noise": [0.45, 0.05, 0.9, 0.2],
        "probability_mua": [0.1, 0.5, np.nan, 0.3], "probability_sua": [0.9, 0.5, np.nan, 0.7],
    })
    stages = [Stage(["neural", "noise"], None, _identity(2)), Stage(["mua", "sua"], None, _identity(2))]
    assert unc.review_ranking(stages) == "calibrated"
    first = unc.expected_gain(table[["probability_neural", "probability_noise"]].to_numpy(), np.array([0, 0, 1, 0]))
    # The second model saw units 0, 1 and 3 (it labels 1, 0 and 1: one mua, two sua); the noise unit is not counted.
    second = unc.expected_gain(np.array([[0.1, 0.9], [0.5, 0.5], [0.3, 0.7]]), np.array([1, 0, 1]))
    got = table_uncertainty(table, stages)
    np.testing.assert_allclose(got, [max(first[0], second[0]), max(first[1], second[1]), first[2],
                                     max(first[3], second[2])])
    queued = unc.add_review_queue(table, stages, ReviewBudget(count=2))
    assert queued["review_rank"].tolist() == review_ranks(got).tolist()
    # One stage without a calibration: the two scores would not be on one scale, so both use the margin.
    mixed = [stages[0], Stage(["mua", "sua"])]
    assert unc.review_ranking(mixed) == "margin"
    plain = [Stage(["neural", "noise"]), Stage(["mua", "sua"])]
    np.testing.assert_allclose(table_uncertainty(table, mixed), table_uncertainty(table, plain))
