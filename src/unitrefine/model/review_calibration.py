"""The calibration of a model's review queue: one-vs-rest isotonic regression on out-of-animal predictions.

A training run's estimate predicts every animal (or recording) with a refit that never saw it; the review queue
of ``predict review=`` ranks units by the expected gain of a review on probabilities calibrated on those
predictions (:func:`unitrefine.model.uncertainty.review_scores`). The calibration is kept in the model folder's
``model_info.json`` (key ``review_calibration``, :meth:`ReviewCalibration.to_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from unitrefine.errors import UnitRefineError

#: Decimals the knots are kept to (probabilities: ``y`` in [0, 1], ``x`` centred probabilities).
X_DECIMALS, Y_DECIMALS = 12, 6


@dataclass(frozen=True)
class ReviewCalibration:
    """One-vs-rest isotonic calibration of a model's threshold-centred probabilities, for its review queue.

    Attributes
    ----------
    knots : tuple of (x, y), one per class in class-code order
        The ``X_thresholds_`` and ``y_thresholds_`` of each class's fitted ``IsotonicRegression``: linear
        interpolation between them, clipped at the ends (:func:`numpy.interp`), is its prediction. Kept rounded
        (``y`` to 6 decimals, ``x`` to 12: between close knots a coarser ``x`` would move the prediction), at fit
        time, so that the calibration the run's estimate scores with is the one ``model_info.json`` keeps.
    """

    knots: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]

    @classmethod
    def fit(cls, proba: np.ndarray, y: np.ndarray) -> ReviewCalibration:
        """Fit on (threshold-centred) probabilities ``proba`` ``(n_units, n_classes)`` and true class codes ``y``."""
        from sklearn.isotonic import IsotonicRegression

        p, y = np.asarray(proba, dtype=np.float64), np.asarray(y)
        knots = []
        for c in range(p.shape[1]):
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p[:, c], y == c)
            knots.append((tuple(round(float(v), X_DECIMALS) for v in iso.X_thresholds_),
                          tuple(round(float(v), Y_DECIMALS) for v in iso.y_thresholds_)))
        return cls(tuple(knots))

    def apply(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities of ``proba`` (centred as at fit), renormalised to sum 1 (uniform where
        every class calibrates to 0; NaN rows stay NaN)."""
        p = np.asarray(proba, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != len(self.knots):
            raise ValueError(f"proba must be (n_units, {len(self.knots)}); got shape {p.shape}")
        out = np.column_stack([np.interp(p[:, c], x, y) for c, (x, y) in enumerate(self.knots)])
        total = out.sum(axis=1, keepdims=True)
        out = np.where(total > 0, out / np.where(total > 0, total, 1.0), 1.0 / p.shape[1])
        out[np.isnan(total[:, 0])] = np.nan
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in ``model_info.json``: ``{"method": "isotonic", "knots": [{"x": [...], "y": [...]},
        ...]}``, one entry per class in class-code order."""
        return {"method": "isotonic", "knots": [{"x": list(x), "y": list(y)} for x, y in self.knots]}

    @classmethod
    def from_dict(cls, data: Any, where: str = "model_info.json") -> ReviewCalibration:
        """Read :meth:`to_dict`'s form.

        Raises
        ------
        UnitRefineError
            Not that form; the message names ``where`` and the key ``review_calibration``.
        """
        try:
            if data.get("method") != "isotonic":
                raise ValueError(f"method {data.get('method')!r}, not 'isotonic'")
            knots = tuple((tuple(float(v) for v in k["x"]), tuple(float(v) for v in k["y"])) for k in data["knots"])
            for x, y in knots:
                if not x or len(x) != len(y) or not np.all(np.isfinite(x + y)) or np.any(np.diff(x) < 0):
                    raise ValueError("knots need equal, non-empty, finite x and y, x increasing")
            if len(knots) < 2:
                raise ValueError("fewer than two classes")
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise UnitRefineError(
                f"{where}: review_calibration is not a calibration this version reads ({exc}). Re-export the model, "
                "or delete the key review_calibration to rank the review queue by the model's margin."
            ) from None
        return cls(knots)
