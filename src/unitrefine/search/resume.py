"""Which study of an experiment a run works on: the one started with its configuration, or a fresh one beside.

Studies of an experiment are named ``<experiment>``, ``<experiment>#2``, ``<experiment>#3``... and each records
its *identity* (:func:`unitrefine.search.study.study_identity`: search space, data, CV folds and scoring, seed), what
its trials' scores depend on. A run continues the latest study with its own identity, so the same command always
finds its study again (and a re-run of a finished study does nothing); a run with another seed, space, data or
CV starts a fresh study beside the others and says so (``search.resume``, :func:`choose_study`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import optuna

from unitrefine.errors import UnitRefineError
from unitrefine.search.study import IDENTITY

log = logging.getLogger(__name__)

#: ``search.resume`` values: continue the study with this configuration, or start a fresh one beside the others
#: (True); always start a fresh one (False); continue the study with this configuration, refusing to start a
#: fresh one beside studies started otherwise ("strict").
RESUME_MODES = (True, False, "strict")


def _recorded(user_attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in user_attrs.items() if k in IDENTITY}


def _differences(recorded: Mapping[str, Any], identity: Mapping[str, str]) -> str:
    """What differs, as the subject of a sentence: "its seed differs", "its search space and seed differ"."""
    labels = [label for key, label in IDENTITY.items() if recorded.get(key) != identity.get(key)]
    listed = labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"
    plural = len(labels) > 1 or labels[0].startswith("data")
    return f"its {listed} {'differ' if plural else 'differs'} from this run's"


def _experiment_studies(storage: optuna.storages.BaseStorage, experiment: str) -> list[tuple[int, Any]]:
    """The studies of ``experiment`` (``<experiment>``, ``<experiment>#2``...), oldest first, with their number."""
    pattern = re.compile(re.escape(experiment) + r"(?:#(\d+))?")
    found = [(int(m.group(1) or 1), s) for s in storage.get_all_studies()
             if (m := pattern.fullmatch(s.study_name))]
    return sorted(found, key=lambda item: item[0])


def choose_study(
    storage: optuna.storages.BaseStorage,
    experiment: str,
    identity: Mapping[str, str],
    resume: bool | str,
    storage_label: str,
) -> str:
    """The name of the study this run of ``experiment`` works on: one to continue, or a new one.

    Studies of an experiment are named ``<experiment>``, then ``<experiment>#2``, ``<experiment>#3``... With
    ``resume`` True the latest study started with this run's ``identity`` (:func:`study_identity`) is continued;
    if there is none, a fresh study is started beside the others, and an INFO line says why and how to continue
    the latest one. ``"strict"`` refuses that instead, and False always starts a fresh study.

    Parameters
    ----------
    storage : optuna.storages.BaseStorage
        Where the studies live.
    experiment : str
        ``experiment_name``.
    identity : mapping
        What this run's trials depend on (:func:`study_identity`).
    resume : bool or str
        ``search.resume``: True, False or ``"strict"`` (:data:`RESUME_MODES`).
    storage_label : str
        How to name the storage in messages.

    Raises
    ------
    UnitRefineError
        With ``resume="strict"``, if the experiment has studies and none was started with this ``identity``;
        for a ``resume`` value that is not one of :data:`RESUME_MODES`. Raised before anything is written.
    """
    if not (isinstance(resume, bool) or resume == "strict"):
        raise UnitRefineError(f"search.resume={resume!r} is not one of true, false, strict.")
    studies = _experiment_studies(storage, experiment)
    if not studies:
        return experiment
    fresh = f"{experiment}#{studies[-1][0] + 1}"
    if resume is False:
        return fresh
    same = {k: identity.get(k) for k in IDENTITY}
    for _, study in reversed(studies):
        recorded = _recorded(study.user_attrs)
        if not recorded or recorded == same:  # nothing recorded: created by a worker stopped right after
            return str(study.study_name)
    latest = studies[-1][1].study_name
    why = _differences(_recorded(studies[-1][1].user_attrs), identity)
    if resume == "strict":
        raise UnitRefineError(
            f"Cannot resume study '{latest}' ({storage_label}) with search.resume=strict: {why}, so its trials "
            "cannot be compared with new ones. Run again with the configuration the study was started with to "
            "continue it, set search.resume=true to start a fresh study beside it, or choose another "
            "experiment_name."
        )
    log.info(
        "Study '%s' (%s) is not continued: %s. Starting a fresh study '%s' beside it; run again with the "
        "configuration '%s' was started with to continue that one.", latest, storage_label, why, fresh, latest,
    )
    return fresh


def check_identity(study: optuna.Study, identity: Mapping[str, str], storage_label: str) -> bool:
    """Record ``identity`` on a new study, or check that a resumed study has the same one.

    Returns
    -------
    bool
        True if the study was new (nothing recorded yet).

    Raises
    ------
    UnitRefineError
        If the study was started with another search space, data, CV setup or seed (:func:`choose_study`
        does not choose such a study).
    """
    recorded = _recorded(study.user_attrs)
    if not recorded:
        for key, value in identity.items():
            study.set_user_attr(key, value)
        return True
    if any(recorded.get(key) != identity.get(key) for key in IDENTITY):
        raise UnitRefineError(
            f"Cannot resume study '{study.study_name}' ({storage_label}): {_differences(recorded, identity)}, so "
            "its trials cannot be compared with new ones. Run again with the configuration the study was started "
            "with to continue it, or with search.resume=true to start a fresh study beside it."
        )
    return False
