"""The training configuration's schema: its keys and their types (``unitrefine.config`` validates against it).

Defaults have one source, the YAML in ``conf/`` that users read: a key ``conf/train.yaml`` (or the config file it
chooses by default for a group: ``cv/default.yaml``, ``tracking/local.yaml``) always sets has no default here
(``MISSING``), except in :class:`CVConfig` and :class:`SearchConfig`, which code also builds by hand; their
defaults equal the YAML's, and ``tests/test_config.py`` fails when they drift apart. The keys of a dataset or a
task are set by its own file (``conf/dataset/``, ``conf/task/``); the defaults below are the only ones for the
keys such a file leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"


@dataclass
class RecordingConfig:
    """One recording session: a metrics table (or a SortingAnalyzer folder), its labels and the ids used to group it."""

    id: str = MISSING
    metrics: str | None = None
    labels: str | None = None
    subject: str | None = None
    analyzer: str | None = None


@dataclass
class MetricsConfig:
    """Analyzer mode: SpikeInterface metrics of one extension to compute where an analyzer lacks them."""

    metric_names: list[str] | None = None
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
    label_column: str | None = None
    metric_names: list[str] | None = None
    exclude_metrics: list[str] = field(default_factory=list)
    exclude_recordings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    label_property: str | None = None
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    strict: bool = False
    generate: GenerateConfig | None = None


@dataclass
class TaskConfig:
    """The classification task as a mapping from curation labels to classes (``null`` drops a unit).

    In a binary task the second class (class code 1) is the positive one: the class ``threshold.tune``'s
    threshold is on.
    """

    name: str = MISSING
    classes: list[str] = MISSING
    mapping: dict[str, str | None] = MISSING


@dataclass
class CVConfig:
    """Inner cross-validation used by the search and the outer held-out recordings (``conf/cv/default.yaml``)."""

    n_splits: int = 5
    group_by: str | None = "recording"
    scoring: str = "balanced_accuracy"
    holdout_recordings: list[str] = field(default_factory=list)
    n_holdout_recordings: int = 0
    refit_on_all: bool = True
    estimate_new_recordings: bool = True
    estimate_max_refits: int = 10


#: The smallest unit limit accepted (below it CV folds of small classes would be too thin to score).
MIN_UNIT_LIMIT = 100


@dataclass
class SearchConfig:
    """The Optuna study: budget, parallelism, storage, pruning and the units expensive components are fitted on.

    The defaults are ``conf/train.yaml``'s ``search``; ``unit_limits`` (the components fitted on a subsample, and
    its size) has none here: ``conf/train.yaml`` gives them and why.
    """

    n_trials: int = 40
    timeout_s: float | None = None
    n_jobs: int = 2
    storage: str | None = None
    resume: Any = True  # True, False or "strict" (unitrefine.search.resume)
    heartbeat_s: int = 10
    grace_period_s: int = 30
    max_retries: int = 3
    pruner: str = "median"
    n_startup_trials: int = 10
    enqueue_defaults: bool = True
    warm_start: str | None = None
    warm_start_trials: int = 5
    unit_limits: dict[str, int | None] = MISSING


@dataclass
class EnsembleConfig:
    """Soft-voting ensemble chosen from the trials' out-of-fold predictions; ``rounds: 0`` exports the best trial."""

    rounds: int = MISSING
    candidates: int = MISSING
    max_members: int | None = MISSING


@dataclass
class ThresholdConfig:
    """Decision threshold of binary tasks, tuned on out-of-fold predictions (``tune: false`` keeps 0.5)."""

    tune: bool = MISSING
    objective: str = MISSING
    target_precision: float = MISSING


@dataclass
class CalibrationConfig:
    """Probability calibration of the exported model, fitted on out-of-fold predictions (``method: null``: none)."""

    method: str | None = MISSING


@dataclass
class RegistryConfig:
    """Model Registry gate and promotion rules (``python -m unitrefine.promote``)."""

    gate_min_score: float = MISSING
    margin: float = MISSING
    n_bootstrap: int = MISSING
    bootstrap_by: str = MISSING
    evaluation_dataset: DatasetConfig | None = MISSING


@dataclass
class TrackingConfig:
    """MLflow tracking (``conf/tracking/local.yaml``). ``uri: null`` means ``sqlite:///<project>/mlruns/mlflow.db``."""

    enabled: bool = MISSING
    uri: str | None = MISSING
    artifact_location: str | None = MISSING
    register: bool = MISSING
    model_name: str | None = MISSING


@dataclass
class OutputConfig:
    """Where the exported model folder goes. ``folder: null`` means ``experiments/<name>/models/<run>``."""

    folder: str | None = MISSING
    overwrite: bool = MISSING


@dataclass
class TrainConfig:
    """Everything one training run needs (``conf/train.yaml``)."""

    experiment_name: str = MISSING
    seed: int = MISSING
    root: str | None = MISSING
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    search_space: dict[str, Any] = MISSING
    cv: CVConfig = field(default_factory=CVConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    ensemble: EnsembleConfig = MISSING
    threshold: ThresholdConfig = MISSING
    calibration: CalibrationConfig = MISSING
    tracking: TrackingConfig = MISSING
    registry: RegistryConfig = MISSING
    output: OutputConfig = MISSING

    @property
    def root_dir(self) -> Path:
        """The directory relative paths in the config are resolved against."""
        return Path(self.root).resolve() if self.root else PROJECT_ROOT

    def resolve_path(self, path: str | Path) -> Path:
        """Resolve ``path`` against :attr:`root_dir` unless it is absolute."""
        return self.root_dir / Path(path).expanduser()
