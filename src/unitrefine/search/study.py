"""The Optuna study: seeded TPE, a pruner, its identity, and what it records of its search.

Which study a run continues, or starts beside the others, is in :mod:`unitrefine.search.resume`; which trials
count toward its budget in :mod:`unitrefine.search.budget`; its pruners in :mod:`unitrefine.search.pruning`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna

from unitrefine.config import SearchConfig
from unitrefine.search.pruning import make_pruner

log = logging.getLogger(__name__)

#: Study user attributes that must match for a study to be resumed, and how to name them.
IDENTITY = {
    "unitrefine.search.search_space": "search space",
    "unitrefine.data.dataset": "data (searched units, features, labels)",
    "unitrefine.cv": "cross-validation (folds or scoring)",
    "unitrefine.seed": "seed",
}
#: Study user attribute: the export of the study (trials counted, MLflow run, model folder and version).
EXPORTED_ATTR = "unitrefine.exported"
#: Study user attribute: the study's MLflow parent run.
RUN_ATTR = "unitrefine.mlflow_run_id"
#: Study user attribute: True when the time cap (``search.timeout_s``) ended the search before its trial budget.
TIMEOUT_ATTR = "unitrefine.stopped_by_timeout"


def quiet_optuna() -> None:
    """Let Optuna log errors only: the progress bar, our log and MLflow report each trial (Optuna would also
    print a traceback for a Ctrl-C)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def stopped_by_timeout(study: optuna.Study) -> bool:
    """Whether the time cap (``search.timeout_s``) stopped the study's search before its trial budget was used.

    Then how many trials ran, and so the exported model, depend on the machine's speed and load: the result
    is not reproducible. Recorded by each worker when its search ends (False once a later run uses up the
    budget); False for a study that never recorded it.
    """
    return bool(study.user_attrs.get(TIMEOUT_ATTR, False))


def record_stopped_by_timeout(study: optuna.Study, stopped: bool) -> None:
    """Record in ``study`` whether the time cap ended its search (see :func:`stopped_by_timeout`)."""
    if stopped_by_timeout(study) != stopped:
        study.set_user_attr(TIMEOUT_ATTR, stopped)


def create_study(
    name: str, search: SearchConfig, seed: int, storage: optuna.storages.BaseStorage | None = None
) -> optuna.Study:
    """A maximising study with a seeded multivariate TPE sampler, loaded if ``storage`` already holds it.

    Parameters
    ----------
    name : str
        Study name.
    search : SearchConfig
        Pruner and start-up settings.
    seed : int
        Sampler seed: the same seed gives the same sequential trial sequence.
    storage : optuna.storages.BaseStorage, optional
        Where the study lives (None: a new in-memory storage).
    """
    with warnings.catch_warnings():
        # `group` (conditional spaces sampled jointly) is still flagged experimental; we rely on it knowingly.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=search.n_startup_trials
        )
    return optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        pruner=make_pruner(search),
        direction="maximize",
        load_if_exists=True,
    )


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def study_identity(
    search_space: Mapping[str, Any],
    data_fingerprint: str,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    cv: Mapping[str, Any],
    seed: int,
) -> dict[str, str]:
    """What a study's trials depend on; a resumed study must match it (see :data:`IDENTITY`).

    Parameters
    ----------
    search_space : mapping
        The search-space config.
    data_fingerprint : str
        Fingerprint of the units the search cross-validates (held-out recordings excluded).
    folds : sequence of (train, validation) arrays
        The CV folds.
    cv : mapping
        Settings that change scores without changing the folds (e.g. ``scoring``).
    seed : int
        The sampler and estimator seed.
    """
    fold_sets = [sorted(int(i) for i in valid) for _, valid in folds]
    return {
        "unitrefine.search.search_space": _digest(search_space),
        "unitrefine.data.dataset": data_fingerprint,
        "unitrefine.cv": _digest({"folds": fold_sets, **cv}),
        "unitrefine.seed": str(seed),
    }
