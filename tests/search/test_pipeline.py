"""Unit limits: which pipelines are limited, and the class-stratified subsample they are fitted on."""

from __future__ import annotations

import numpy as np
import pytest

from unitrefine.search.pipeline import UnitLimit, fit_positions, unit_limit
from unitrefine.search.search_space import Choice


def spec(**names: str) -> dict[str, Choice]:
    return {slot: Choice(name, {}) for slot, name in names.items()}


def test_unit_limit_is_the_smallest_among_the_pipelines_components() -> None:
    limits = {"svc": 5000, "knn": 10000, "random_forest": None}
    assert unit_limit(spec(imputer="knn", classifier="svc"), limits) == UnitLimit(5000, ("svc",))
    assert unit_limit(spec(imputer="knn", classifier="random_forest"), limits) == UnitLimit(10000, ("knn",))
    assert unit_limit(spec(imputer="median", classifier="random_forest"), limits) is None
    assert unit_limit(spec(imputer="knn", classifier="svc"), {"svc": 300, "knn": 300}) == UnitLimit(300, ("knn", "svc"))


@pytest.mark.parametrize("limit", [None, 1000, 5000])
def test_no_subsample_when_the_units_fit_within_the_limit(limit: int | None) -> None:
    y = np.repeat([0, 1], 500)
    np.testing.assert_array_equal(fit_positions(y, limit, seed=0), np.arange(1000))


def test_subsample_keeps_class_shares_every_class_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    y = rng.choice(3, size=20000, p=[0.7, 0.28, 0.02])
    pos = fit_positions(y, 1000, seed=3)
    assert len(pos) == 1000 and len(np.unique(pos)) == 1000 and np.all(np.diff(pos) > 0)
    share = np.bincount(y[pos], minlength=3) / 1000
    np.testing.assert_allclose(share, np.bincount(y) / len(y), atol=1e-3)
    np.testing.assert_array_equal(pos, fit_positions(y, 1000, seed=3))
    assert not np.array_equal(pos, fit_positions(y, 1000, seed=4))


def test_a_class_too_rare_for_its_share_still_gets_a_unit() -> None:
    y = np.array([0] * 9990 + [1] * 10)
    pos = fit_positions(y, 200, seed=0)
    # Shares of 200: 199.8 and 0.2, so 200 (largest remainder) and 0, raised to the one unit every class keeps.
    assert np.bincount(y[pos]).tolist() == [200, 1]
