"""Checks of a training configuration the schema's types cannot express: ranges, choices, what a dataset's mode
requires, keys that no longer exist, and ``dataset.exclude_recordings``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from unitrefine.config_check import Problems, did_you_mean
from unitrefine.config_schema import MIN_UNIT_LIMIT, DatasetConfig, SearchConfig, TrainConfig
from unitrefine.errors import UnitRefineError

#: Keys that no longer exist, each with what to do instead: a configuration setting one is refused with this.
REMOVED_KEYS: dict[str, str] = {
    "task.positive_class": "a binary task's positive class is the second of task.classes (class code 1, the class "
                           "threshold.tune's threshold is on), so task.positive_class was never read: list the classes "
                           "in that order and delete task.positive_class",
}

#: The only ``cv.scoring``: the ensemble's choice, the registry gate, promotion and the estimate for new recordings
#: all score balanced accuracy, so the search must too.
SUPPORTED_SCORING = ("balanced_accuracy",)

STUDY_RDB_SCHEMES = ("sqlite", "postgresql")  # search.storage URLs of a database


def removed_key_problems(cfg: Mapping[str, Any]) -> Problems:
    """The keys of :data:`REMOVED_KEYS` that ``cfg`` (plain containers) sets, each with what to do instead."""
    problems = []
    for key, advice in REMOVED_KEYS.items():
        parent, _, name = key.rpartition(".")
        node: Any = cfg
        for part in parent.split(".") if parent else []:
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and name in node:
            problems.append((key, f"it no longer exists: {advice}"))
    return problems


def forget_removed_keys(cfg: DictConfig) -> list[str]:
    """Delete the keys of :data:`REMOVED_KEYS` from a recorded configuration (they were never read); return them."""
    removed = []
    for key in REMOVED_KEYS:
        parent_key, _, name = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if isinstance(parent, DictConfig) and name in parent:
            del parent[name]
            removed.append(key)
    return removed


def drop_excluded_recordings(cfg: TrainConfig) -> None:
    """Remove ``dataset.exclude_recordings`` from the dataset (e.g. to keep a whole animal for a later test)."""
    excluded = set(cfg.dataset.exclude_recordings)
    if not excluded:
        return
    ids = [r.id for r in cfg.dataset.recordings]
    problems = []
    if excluded - set(ids):
        problems.append(f"dataset.exclude_recordings names {sorted(excluded - set(ids))}, which are not recordings of "
                        f"the dataset {ids}")
    if excluded & set(cfg.cv.holdout_recordings):
        problems.append(f"{sorted(excluded & set(cfg.cv.holdout_recordings))} are both excluded from the dataset and "
                        "held out (cv.holdout_recordings): choose other held-out recordings")
    if excluded >= set(ids):
        problems.append("dataset.exclude_recordings excludes every recording of the dataset")
    if problems:
        raise UnitRefineError("Invalid configuration:\n  - " + "\n  - ".join(problems))
    cfg.dataset.recordings = [r for r in cfg.dataset.recordings if r.id not in excluded]


def check_values(cfg: TrainConfig, components: set[str]) -> None:
    """Checks the type system cannot express; ``components`` are the names ``search.unit_limits`` may use.

    Raises
    ------
    UnitRefineError
        Listing every problem, each naming its key.
    """
    problems = _search_problems(cfg.search, components)
    problems += [p for key, value, choices in (
        ("threshold.objective", cfg.threshold.objective, ("balanced_accuracy", "precision")),
        ("calibration.method", cfg.calibration.method, ("sigmoid", "isotonic", None)),
        ("registry.bootstrap_by", cfg.registry.bootstrap_by, ("recording", "unit")),
        ("cv.group_by", cfg.cv.group_by, ("recording", "subject", None)),
    ) if (p := _not_one_of(key, value, choices))]
    if cfg.cv.scoring not in SUPPORTED_SCORING:
        problems.append(
            f"cv.scoring must be balanced_accuracy (got '{cfg.cv.scoring}'): the ensemble's choice, the registry "
            "gate, promotion and the estimate for new recordings all score balanced accuracy, so the search does too; "
            "another scorer is not supported"
        )
    if cfg.ensemble.max_members is not None and cfg.ensemble.max_members < 1:
        problems.append(f"ensemble.max_members must be null (no bound) or >= 1 (got {cfg.ensemble.max_members})")
    if cfg.ensemble.rounds < 0 or cfg.ensemble.candidates < 1:
        problems.append("ensemble.rounds must be >= 0 and ensemble.candidates >= 1")
    if cfg.threshold.tune and len(cfg.task.classes) != 2:
        problems.append(f"threshold.tune needs a binary task; '{cfg.task.name}' has {len(cfg.task.classes)} classes")
    if cfg.calibration.method is not None and cfg.threshold.tune:
        problems.append("calibration.method and threshold.tune cannot be combined: choose one")
    if not 0 < cfg.threshold.target_precision <= 1:
        problems.append(f"threshold.target_precision must be in (0, 1] (got {cfg.threshold.target_precision})")
    if cfg.registry.n_bootstrap < 100:
        problems.append(f"registry.n_bootstrap must be >= 100 (got {cfg.registry.n_bootstrap})")
    if cfg.cv.estimate_max_refits < 2:
        problems.append(f"cv.estimate_max_refits must be >= 2 (got {cfg.cv.estimate_max_refits})")
    if cfg.cv.n_splits < 2:
        problems.append(f"cv.n_splits must be >= 2 (got {cfg.cv.n_splits})")
    for name, dataset in (("dataset", cfg.dataset), ("registry.evaluation_dataset", cfg.registry.evaluation_dataset)):
        if dataset is not None:
            problems += _dataset_problems(name, dataset)
    if not cfg.dataset.recordings:
        problems.append("dataset.recordings is empty: list at least one recording (id, metrics, labels)")
    if len(cfg.task.classes) < 2 or len(set(cfg.task.classes)) != len(cfg.task.classes):
        problems.append(f"task.classes must list at least two distinct classes (got {cfg.task.classes})")
    bad_targets = sorted({v for v in cfg.task.mapping.values() if v is not None} - set(cfg.task.classes))
    if bad_targets:
        problems.append(f"task.mapping maps to {bad_targets}, which are not in task.classes {cfg.task.classes}")
    if problems:
        raise UnitRefineError("Invalid configuration:\n  - " + "\n  - ".join(problems))


def _search_problems(search: SearchConfig, components: set[str]) -> list[str]:
    """``search.*``: budget, parallelism, pruner, resume, heartbeats, retries, warm start, unit limits, storage."""
    problems = []
    if search.n_trials < 1:
        problems.append(f"search.n_trials must be >= 1 (got {search.n_trials})")
    if search.n_jobs < 1:
        problems.append(f"search.n_jobs must be >= 1 (got {search.n_jobs})")
    if search.timeout_s is not None and search.timeout_s <= 0:
        problems.append(f"search.timeout_s must be > 0 or null (got {search.timeout_s})")
    problems += [p for key, value, choices in (
        ("search.pruner", search.pruner, ("median", "hyperband", "wilcoxon", "none")),
        ("search.resume", search.resume, (True, False, "strict")),
    ) if (p := _not_one_of(key, value, choices))]
    if search.heartbeat_s < 1 or search.grace_period_s <= search.heartbeat_s:
        problems.append(
            f"search.heartbeat_s must be >= 1 and search.grace_period_s larger than it "
            f"(got {search.heartbeat_s} and {search.grace_period_s})"
        )
    if search.max_retries < 0:
        problems.append(f"search.max_retries must be >= 0 (got {search.max_retries})")
    if search.warm_start_trials < 1:
        problems.append(f"search.warm_start_trials must be >= 1 (got {search.warm_start_trials})")
    problems += _unit_limit_problems(search.unit_limits, components)
    if search.storage is not None:
        try:
            storage_kind(search.storage)
        except UnitRefineError as exc:
            problems.append(str(exc))
    return problems


def storage_kind(spec: str) -> str:
    """``memory``, ``journal`` or ``rdb`` for a ``search.storage`` value.

    Raises
    ------
    UnitRefineError
        If the value is none of the supported forms.
    """
    if spec == "memory":
        return "memory"
    if spec.endswith(".journal"):
        return "journal"
    scheme = spec.split("://", 1)[0].split("+", 1)[0] if "://" in spec else ""
    if scheme in STUDY_RDB_SCHEMES:
        return "rdb"
    raise UnitRefineError(
        f"search.storage='{spec}' is not supported. Use 'memory', a file path ending in '.journal' (one host), "
        "'sqlite:///path/study.db' or 'postgresql://user:password@host:5432/database' (several hosts)."
    )


def _not_one_of(key: str, value: Any, choices: tuple[Any, ...]) -> str:
    """``<key> must be one of: a, b, null (got 'x'; did you mean a?)`` when ``value`` is not a choice, else ``""``."""
    if any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices):  # 1 is not True
        return ""
    names = ["null" if c is None else str(c).lower() if isinstance(c, bool) else c for c in choices]
    literals = {"null" if c is None else str(c).lower() for c in choices if c is None or isinstance(c, bool)}
    if isinstance(value, str) and value.lower() in literals:  # 'true' in quotes is text, not YAML's true
        return (f"{key} must be one of: {', '.join(names)} (got the text '{value}'; write {value.lower()} "
                "without quotes)")
    hint = did_you_mean(str(value), names).replace(" (", "; ").rstrip(")")
    return f"{key} must be one of: {', '.join(names)} (got '{value}'{hint})"


def _unit_limit_problems(limits: dict[str, int | None], components: set[str]) -> list[str]:
    """``search.unit_limits`` must name ``components`` and give each null or at least MIN_UNIT_LIMIT units."""
    problems = [
        f"search.unit_limits.{name}: '{name}' is not a component; choose from {sorted(components)}"
        for name in sorted(set(limits) - components)
    ]
    problems += [
        f"search.unit_limits.{name} must be null (no limit) or at least {MIN_UNIT_LIMIT} units (got {value})"
        for name, value in limits.items() if value is not None and value < MIN_UNIT_LIMIT
    ]
    return problems


def _dataset_problems(key: str, dataset: DatasetConfig) -> list[str]:
    """What a dataset's mode requires of its recordings (CSV: a metrics table; analyzers: an analyzer folder)."""
    if dataset.mode not in ("csv", "analyzers"):
        return [_not_one_of(f"{key}.mode", dataset.mode, ("csv", "analyzers"))]
    problems = []
    field_name = "metrics" if dataset.mode == "csv" else "analyzer"
    lacking = [r.id for r in dataset.recordings if getattr(r, field_name) is None]
    if lacking:
        problems.append(f"{key}.mode is '{dataset.mode}' but recordings {lacking} have no '{field_name}' path")
    if dataset.mode == "analyzers":
        unlabelled = [r.id for r in dataset.recordings if r.labels is None and dataset.label_property is None]
        if unlabelled:
            problems.append(
                f"recordings {unlabelled} of {key} have no labels: give each a 'labels' file, or set "
                f"{key}.label_property to a sorting property holding the labels (e.g. quality)"
            )
        if dataset.compute.n_jobs < 1:
            problems.append(f"{key}.compute.n_jobs must be >= 1 (got {dataset.compute.n_jobs})")
    return problems
