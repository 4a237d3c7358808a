"""The user attributes unitrefine gives Optuna trials: one name each, written and read through these constants.

The study's own attributes (identity, export, MLflow run, time cap) are in :mod:`unitrefine.search.study`.
"""

from __future__ import annotations

#: Each fold's score so far (list of float), set by the objective after every fold.
FOLD_SCORES_ATTR = "fold_scores"
#: The standard deviation of a completed trial's fold scores.
CV_STD_ATTR = "cv_std"
#: Why the trial's configuration could not be fitted: the trial FAILed and counts toward ``search.n_trials``.
ERROR_ATTR = "error"
#: A duplicate: the number of the trial that evaluated (or evaluates) its configuration; it is not fitted.
DUPLICATE_ATTR = "duplicate_of"
#: The worker process that ran the trial (:attr:`unitrefine.search.storage.StudyStorage.worker_id`).
WORKER_ATTR = "worker"
#: A trial queued from a previous model's configurations (``search.warm_start``): its source.
WARM_START_ATTR = "unitrefine.run.warm_start"
