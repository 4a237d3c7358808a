"""Typed configuration schema, validated at the boundary (Hydra/OmegaConf in, dataclasses out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from unitrefine.config_check import ConfigOrigin, did_you_mean, format_problems, schema_problems
from unitrefine.errors import UnitRefineError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"


@dataclass
class RecordingConfig:
    """One recording session: a metrics table (or a SortingAnalyzer folder), its labels and the ids used to group it."""

    id: str = MISSING
    metrics: Optional[str] = None
    labels: Optional[str] = None
    subject: Optional[str] = None
    analyzer: Optional[str] = None


@dataclass
class MetricsConfig:
    """Analyzer mode: SpikeInterface metrics of one extension to compute where an analyzer lacks them."""

    metric_names: Optional[list[str]] = None
    metric_params: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ComputeConfig:
    """Analyzer mode: how missing metrics (and the extensions they depend on) are computed."""

    quality_metrics: MetricsConfig = field(default_factory=MetricsConfig)
    template_metrics: MetricsConfig = field(default_factory=MetricsConfig)
    pca_metrics: bool = False
    extensions: dict[str, Any] = field(default_factory=dict)
    recompute: bool = False
    save: bool = True
    n_jobs: int = 1


@dataclass
class GenerateConfig:
    """Synthetic analyzers made with SpikeInterface's ground-truth generator (``unitrefine.data.synthetic``)."""

    seed: int = 0
    duration_s: float = 60.0
    num_channels: int = 32
    num_units: int = 20
    firing_rate_hz: float = 15.0
    n_merged: int = 3
    n_contaminated: int = 2
    contamination: float = 0.5
    n_noise: int = 6


@dataclass
class DatasetConfig:
    """Where the per-unit metrics and curation labels are, and which metrics are features."""

    name: str = MISSING
    mode: str = "csv"
    recordings: list[RecordingConfig] = field(default_factory=list)
    label_column: Optional[str] = None
    metric_names: Optional[list[str]] = None
    exclude_metrics: list[str] = field(default_factory=list)
    exclude_recordings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    label_property: Optional[str] = None
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    strict: bool = False
    generate: Optional[GenerateConfig] = None


@dataclass
class TaskConfig:
    """The classification task as a mapping from curation labels to classes (``null`` drops a unit)."""

    name: str = MISSING
    classes: list[str] = MISSING
    mapping: dict[str, Optional[str]] = MISSING
    positive_class: Optional[str] = None


@dataclass
class CVConfig:
    """Inner cross-validation used by the search and the outer held-out recordings."""

    n_splits: int = 5
    group_by: Optional[str] = "recording"
    scoring: str = "balanced_accuracy"
    holdout_recordings: list[str] = field(default_factory=list)
    n_holdout_recordings: int = 0
    refit_on_all: bool = True
    estimate_new_recordings: bool = True
    estimate_max_refits: int = 10


#: Components whose fits grow faster than the data (SVC: quadratic; KNN imputation: every imputed unit against
#: every stored one) or are slow on a hundred thousand units (exact gradient boosting, deep forests, the MLP): a
#: pipeline holding one is fitted on a class-stratified random subsample of at most this many units, in the
#: search's CV folds and in the export alike. All are above the curated datasets' sizes (mouse_v1: 4.4k units).
#: Measured in benchmarks/results/scaling.md; ``conf/train.yaml`` sets the same defaults (``search.unit_limits``).
DEFAULT_UNIT_LIMITS: dict[str, Optional[int]] = {
    "svc": 5000,
    "knn": 5000,
    "gradient_boosting": 10000,
    "random_forest": 10000,
    "extra_trees": 20000,
    "mlp": 20000,
}
#: The smallest unit limit accepted (below it CV folds of small classes would be too thin to score).
MIN_UNIT_LIMIT = 100


@dataclass
class SearchConfig:
    """The Optuna study: budget, parallelism, storage, pruning and the units expensive components are fitted on."""

    n_trials: int = 50
    timeout_s: Optional[float] = None
    n_jobs: int = 1
    storage: Optional[str] = None
    resume: Any = True  # True, False or "strict" (unitrefine.search.resume)
    heartbeat_s: int = 10
    grace_period_s: int = 30
    max_retries: int = 3
    pruner: str = "median"
    n_startup_trials: int = 10
    enqueue_defaults: bool = True
    warm_start: Optional[str] = None
    warm_start_trials: int = 5
    unit_limits: dict[str, Optional[int]] = field(default_factory=lambda: dict(DEFAULT_UNIT_LIMITS))


@dataclass
class EnsembleConfig:
    """Soft-voting ensemble chosen from the trials' out-of-fold predictions; ``rounds: 0`` exports the best trial."""

    rounds: int = 0
    candidates: int = 20
    max_members: Optional[int] = None


@dataclass
class ThresholdConfig:
    """Decision threshold of binary tasks, tuned on out-of-fold predictions (``tune: false`` keeps 0.5)."""

    tune: bool = False
    objective: str = "balanced_accuracy"
    target_precision: float = 0.9


@dataclass
class CalibrationConfig:
    """Probability calibration of the exported model, fitted on out-of-fold predictions (``method: null``: none)."""

    method: Optional[str] = None


@dataclass
class RegistryConfig:
    """Model Registry gate and promotion rules (``python -m unitrefine.promote``)."""

    gate_min_score: float = 0.0
    margin: float = 0.0
    n_bootstrap: int = 1000
    bootstrap_by: str = "recording"
    evaluation_dataset: Optional[DatasetConfig] = None


@dataclass
class TrackingConfig:
    """MLflow tracking. ``uri: null`` means ``sqlite:///<project>/mlruns/mlflow.db``."""

    enabled: bool = True
    uri: Optional[str] = None
    artifact_location: Optional[str] = None
    register: bool = True
    model_name: Optional[str] = None


@dataclass
class OutputConfig:
    """Where the exported model folder goes. ``folder: null`` means ``experiments/<name>/models/<run>``."""

    folder: Optional[str] = None
    overwrite: bool = False


@dataclass
class TrainConfig:
    """Everything one training run needs."""

    experiment_name: str = MISSING
    seed: int = 42
    root: Optional[str] = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    search_space: dict[str, Any] = field(default_factory=dict)
    cv: CVConfig = field(default_factory=CVConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    @property
    def root_dir(self) -> Path:
        """The directory relative paths in the config are resolved against."""
        return Path(self.root).resolve() if self.root else PROJECT_ROOT

    def resolve_path(self, path: str | Path) -> Path:
        """Resolve ``path`` against :attr:`root_dir` unless it is absolute."""
        return self.root_dir / Path(path).expanduser()


def validate_config(cfg: DictConfig | dict[str, Any], origin: ConfigOrigin | None = None) -> TrainConfig:
    """Check a composed config against the schema and return it as typed dataclasses.

    Parameters
    ----------
    cfg : DictConfig or dict
        The composed configuration.
    origin : ConfigOrigin, optional
        The overrides and config files it was composed from, to name where a bad value is set.

    Returns
    -------
    TrainConfig
        The validated configuration.

    Raises
    ------
    UnitRefineError
        If a key is unknown, a value has the wrong type or shape or a required value is missing (every such
        problem, each with its dotted key, the value given and what is expected), or a value is out of range.
    """
    try:
        plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
        problems = schema_problems(plain, TrainConfig)
        if problems:
            raise UnitRefineError(format_problems(problems, origin))
        merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:  # what the schema walk does not see, e.g. an interpolation
        key = getattr(exc, "full_key", None) or "(top level)"
        message = str(exc).splitlines()[0]
        raise UnitRefineError(format_problems([(key, message)], origin)) from None
    assert isinstance(obj, TrainConfig)
    _check_values(obj)
    _drop_excluded_recordings(obj)
    return obj


def _drop_excluded_recordings(cfg: TrainConfig) -> None:
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


def _check_values(cfg: TrainConfig) -> None:
    """Checks the type system cannot express."""
    problems: list[str] = []
    if cfg.search.n_trials < 1:
        problems.append(f"search.n_trials must be >= 1 (got {cfg.search.n_trials})")
    if cfg.search.n_jobs < 1:
        problems.append(f"search.n_jobs must be >= 1 (got {cfg.search.n_jobs})")
    if cfg.search.timeout_s is not None and cfg.search.timeout_s <= 0:
        problems.append(f"search.timeout_s must be > 0 or null (got {cfg.search.timeout_s})")
    problems += [p for key, value, choices in (
        ("search.pruner", cfg.search.pruner, ("median", "hyperband", "wilcoxon", "none")),
        ("search.resume", cfg.search.resume, (True, False, "strict")),
        ("threshold.objective", cfg.threshold.objective, ("balanced_accuracy", "precision")),
        ("calibration.method", cfg.calibration.method, ("sigmoid", "isotonic", None)),
        ("registry.bootstrap_by", cfg.registry.bootstrap_by, ("recording", "unit")),
        ("cv.group_by", cfg.cv.group_by, ("recording", "subject", None)),
    ) if (p := _not_one_of(key, value, choices))]
    if cfg.search.heartbeat_s < 1 or cfg.search.grace_period_s <= cfg.search.heartbeat_s:
        problems.append(
            f"search.heartbeat_s must be >= 1 and search.grace_period_s larger than it "
            f"(got {cfg.search.heartbeat_s} and {cfg.search.grace_period_s})"
        )
    if cfg.search.max_retries < 0:
        problems.append(f"search.max_retries must be >= 0 (got {cfg.search.max_retries})")
    if cfg.search.warm_start_trials < 1:
        problems.append(f"search.warm_start_trials must be >= 1 (got {cfg.search.warm_start_trials})")
    problems += _unit_limit_problems(cfg.search.unit_limits)
    if cfg.search.storage is not None:
        try:
            storage_kind(cfg.search.storage)
        except UnitRefineError as exc:
            problems.append(str(exc))
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
    if cfg.task.positive_class is not None and cfg.task.positive_class not in cfg.task.classes:
        problems.append(f"task.positive_class '{cfg.task.positive_class}' is not in task.classes")
    if problems:
        raise UnitRefineError("Invalid configuration:\n  - " + "\n  - ".join(problems))


STUDY_RDB_SCHEMES = ("sqlite", "postgresql")  # search.storage URLs of a database


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
    hint = did_you_mean(str(value), names).replace(" (", "; ").rstrip(")")
    return f"{key} must be one of: {', '.join(names)} (got '{value}'{hint})"


def _unit_limit_problems(limits: dict[str, Optional[int]]) -> list[str]:
    """``search.unit_limits`` must name allowlisted components and give each null or at least MIN_UNIT_LIMIT units."""
    from unitrefine.search.estimators import REGISTRY  # sklearn: only when a training config is validated

    names = {name for group in REGISTRY.values() for name, c in group.items() if c.build is not None}
    problems = [
        f"search.unit_limits.{name}: '{name}' is not a component; choose from {sorted(names)}"
        for name in sorted(set(limits) - names)
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


def compose_config(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with Hydra's compose API, as the command line would.

    Parameters
    ----------
    overrides : list of str, optional
        Command-line style overrides, e.g. ``["+experiment=smoke", "search.n_trials=3"]``.
    config_name : str
        The primary config.

    Returns
    -------
    DictConfig

    Raises
    ------
    UnitRefineError
        An override Hydra cannot read, an unknown key or config option (with the closest known one), or ``+``
        for a key that exists; the message names the override as typed.
    """
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from unitrefine.hydra_errors import explain_composition_error, explain_yaml_error

    overrides = list(overrides or [])
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)
    except HydraException as exc:
        schema = TrainConfig if config_name in ("train", "promote") else None
        raise UnitRefineError(explain_composition_error(exc, overrides, config_name, CONF_DIR, schema)) from None
    except yaml.YAMLError as exc:
        raise UnitRefineError(explain_yaml_error(exc, CONF_DIR)) from None


def config_origin(overrides: list[str], choices: dict[str, Any], config_name: str = "train") -> ConfigOrigin:
    """Where a configuration composed from ``conf/<config_name>.yaml`` came from (see :class:`ConfigOrigin`)."""
    return ConfigOrigin(tuple(overrides), dict(choices), config_name, CONF_DIR)
