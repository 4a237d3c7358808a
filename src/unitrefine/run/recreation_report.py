"""The report of a re-creation: what was re-created, how close it came to the record, and what differs.

Returned by :func:`unitrefine.run.recreation.recreate`; :meth:`RecreateReport.summary` is what the command logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RecreateReport"]


@dataclass(frozen=True)
class RecreateReport:
    """The outcome of :func:`unitrefine.run.recreation.recreate`.

    Attributes
    ----------
    source : str
        What was re-created.
    run_id : str or None
        The recorded MLflow run.
    identical : bool
        Whether the trials, the export and the predictions all match the record.
    differences : tuple of str
        What differs, one sentence each (empty when identical).
    warnings : tuple of str
        Where this run cannot be reproduced exactly (time cap, several workers, package versions...).
    data_fingerprint : str
        The fingerprint of the training units, equal to the recorded one.
    n_trials : int
        Trials the recorded run reports.
    max_score_difference : float
        The largest CV-score difference of a trial both runs completed.
    max_probability_difference : float
        The largest class-probability difference of the two exported models on the recorded training units.
    n_training_units : int
        Those units.
    labels_differ : int
        How many of them the two models label differently.
    max_holdout_difference : float or None
        The same for the held-out predictions (None without held-out recordings).
    recreated_folder : Path or None
        The re-created model folder, kept when ``output`` was given.
    """

    source: str
    run_id: str | None
    identical: bool
    differences: tuple[str, ...]
    warnings: tuple[str, ...]
    data_fingerprint: str
    n_trials: int
    max_score_difference: float
    max_probability_difference: float
    n_training_units: int
    labels_differ: int
    max_holdout_difference: float | None
    recreated_folder: Path | None

    def summary(self) -> str:
        """The report as text, ending in ``identical`` or what differs."""
        run = f" (MLflow run {self.run_id})" if self.run_id and self.run_id not in self.source else ""
        lines = [
            f"Re-created {self.source}{run} from its recorded configuration:",
            f"  data: fingerprint {self.data_fingerprint[:16]} as recorded",
            f"  trials: {self.n_trials} recorded; largest CV-score difference {self.max_score_difference:.3g}",
            f"  predictions on the {self.n_training_units} training units: largest probability difference "
            f"{self.max_probability_difference:.3g}, {self.labels_differ} label(s) differ",
        ]
        if self.max_holdout_difference is not None:
            lines.append(f"  held-out predictions: largest probability difference {self.max_holdout_difference:.3g}")
        lines += [f"  warning: {w}" for w in self.warnings]
        lines.append(f"  re-created model folder: {self.recreated_folder}" if self.recreated_folder is not None
                     else "  re-created model folder: removed (pass output=<folder> to keep it)")
        lines.append("Result: identical" if self.identical else
                     "Result: differs\n" + "\n".join(f"  - {d}" for d in self.differences))
        return "\n".join(lines)
