"""The training configuration's schema (unitrefine.config_schema): which keys have no default, their types, paths.

That every default left in the schema equals the YAML's is tests/test_config.py's; here, the reverse: a key the
YAML sets has none in the schema (except ``cv`` and ``search``, which code also builds by hand).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from unitrefine.config import compose_config
from unitrefine.config_schema import (
    CONF_DIR,
    PROJECT_ROOT,
    ComputeConfig,
    DatasetConfig,
    EnsembleConfig,
    GenerateConfig,
    MetricsConfig,
    RecordingConfig,
    RegistryConfig,
    SearchConfig,
    TaskConfig,
    ThresholdConfig,
    TrackingConfig,
    TrainConfig,
)

#: Sections whose schema defaults are kept on purpose (code builds them by hand; test_config compares them).
WITH_DEFAULTS = ("search", "cv")


def field_of(schema: type, name: str) -> dataclasses.Field[Any]:
    return {f.name: f for f in dataclasses.fields(schema)}[name]


def keys_without_default(schema: type, values: dict[str, Any], prefix: str = "") -> tuple[list[str], list[str]]:
    """(every key of ``values`` walked, those of them with a default in ``schema``)."""
    walked, defaulted = [], []
    hints = typing.get_type_hints(schema)
    for name, value in values.items():
        key, f = f"{prefix}{name}", field_of(schema, name)
        walked.append(key)
        has_default = f.default is not dataclasses.MISSING and f.default != "???"
        if has_default or f.default_factory is not dataclasses.MISSING:
            defaulted.append(key)
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            sub_walked, sub_defaulted = keys_without_default(hints[name], value, f"{key}.")
            walked, defaulted = walked + sub_walked, defaulted + sub_defaulted
    return walked, defaulted


def test_every_key_train_yaml_and_its_default_tracking_file_set_has_no_default_in_the_schema() -> None:
    train = yaml.safe_load((CONF_DIR / "train.yaml").read_text())
    values = {k: v for k, v in train.items() if k not in ("defaults", "hydra", *WITH_DEFAULTS)}
    values["tracking"] = yaml.safe_load((CONF_DIR / "tracking" / "local.yaml").read_text())
    walked, defaulted = keys_without_default(TrainConfig, values)
    assert defaulted == []
    assert walked == [
        "experiment_name", "seed", "root",
        "ensemble", "ensemble.rounds", "ensemble.candidates", "ensemble.max_members",
        "threshold", "threshold.tune", "threshold.objective", "threshold.target_precision",
        "calibration", "calibration.method",
        "registry", "registry.gate_min_score", "registry.margin", "registry.n_bootstrap", "registry.bootstrap_by",
        "registry.evaluation_dataset",
        "output", "output.folder", "output.overwrite",
        "tracking", "tracking.enabled", "tracking.uri", "tracking.artifact_location", "tracking.register",
        "tracking.model_name",
    ]
    # the exception is real: search's keys keep defaults (and the walk would have caught them)
    assert keys_without_default(SearchConfig, train["search"])[1][:3] == ["n_trials", "timeout_s", "n_jobs"]


@pytest.mark.parametrize("task_file", sorted(p.name for p in (CONF_DIR / "task").glob("*.yaml")))
def test_every_task_file_sets_every_task_key_and_none_has_a_default(task_file: str) -> None:
    task = yaml.safe_load((CONF_DIR / "task" / task_file).read_text())
    assert keys_without_default(TaskConfig, task) == (["name", "classes", "mapping"], [])


def test_without_the_yaml_exactly_the_keys_it_must_set_are_missing() -> None:
    assert OmegaConf.missing_keys(OmegaConf.structured(TrainConfig)) == {
        "experiment_name", "seed", "root", "dataset.name", "task.name", "task.classes", "task.mapping",
        "search_space", "search.unit_limits", "ensemble", "threshold", "calibration", "tracking", "registry", "output",
    }
    assert OmegaConf.missing_keys(OmegaConf.structured(DatasetConfig)) == {"name"}
    assert OmegaConf.missing_keys(OmegaConf.structured(RecordingConfig)) == {"id"}
    assert OmegaConf.missing_keys(OmegaConf.structured(EnsembleConfig)) == {"rounds", "candidates", "max_members"}


@pytest.mark.parametrize(
    ("schema", "name", "tp"),
    [
        (TrainConfig, "seed", int),
        (TrainConfig, "root", str | None),
        (TrainConfig, "search_space", dict[str, Any]),
        (TrainConfig, "dataset", DatasetConfig),
        (DatasetConfig, "recordings", list[RecordingConfig]),
        (DatasetConfig, "metric_names", list[str] | None),
        (DatasetConfig, "generate", GenerateConfig | None),
        (DatasetConfig, "compute", ComputeConfig),
        (ComputeConfig, "quality_metrics", MetricsConfig),
        (TaskConfig, "classes", list[str]),
        (TaskConfig, "mapping", dict[str, str | None]),
        (SearchConfig, "timeout_s", float | None),
        (SearchConfig, "resume", Any),
        (SearchConfig, "unit_limits", dict[str, int | None]),
        (EnsembleConfig, "max_members", int | None),
        (ThresholdConfig, "target_precision", float),
        (RegistryConfig, "evaluation_dataset", DatasetConfig | None),
        (TrackingConfig, "uri", str | None),
    ],
)
def test_field_types(schema: type, name: str, tp: Any) -> None:
    assert typing.get_type_hints(schema)[name] == tp


def test_omegaconf_converts_composed_values_to_the_schema_types() -> None:
    cfg = compose_config(["+experiment=smoke", "search.timeout_s=60", "threshold.target_precision=1",
                          "search.unit_limits.svc=null", "seed=7",
                          "registry.evaluation_dataset={name: e, recordings: [{id: r1, metrics: r1.csv}]}"])
    obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg))
    assert isinstance(obj, TrainConfig)
    assert (type(obj.search.timeout_s), obj.search.timeout_s) == (float, 60.0)
    assert (type(obj.threshold.target_precision), obj.threshold.target_precision) == (float, 1.0)
    assert (type(obj.seed), obj.seed) == (int, 7)
    assert obj.search.unit_limits["svc"] is None and obj.search.unit_limits["knn"] == 5000
    assert [type(r) for r in obj.dataset.recordings] == [RecordingConfig] * 4
    assert obj.dataset.recordings[0] == RecordingConfig(
        id="mouse2a_imec0", subject="mouse2", metrics="experiments/mouse_v1/data/mouse2a_imec0/quality_metrics.csv",
        labels="experiments/mouse_v1/data/mouse2a_imec0/cluster_group.tsv")
    evaluation = obj.registry.evaluation_dataset
    assert isinstance(evaluation, DatasetConfig)
    assert evaluation.recordings == [RecordingConfig(id="r1", metrics="r1.csv")]


def test_a_dataset_file_leaving_keys_out_gets_the_schema_defaults() -> None:
    given = {"name": "mine", "recordings": [{"id": "r1", "metrics": "r1.csv"}], "generate": {"num_units": 5}}
    dataset = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DatasetConfig), given))
    assert isinstance(dataset, DatasetConfig)
    assert (dataset.mode, dataset.label_column, dataset.metric_names, dataset.label_property, dataset.strict) == (
        "csv", None, None, None, False)
    assert (dataset.exclude_metrics, dataset.exclude_recordings, dataset.metadata) == ([], [], {})
    compute = dataset.compute
    assert (compute.pca_metrics, compute.recompute, compute.save, compute.n_jobs, compute.extensions) == (
        False, False, True, 1, {})
    assert (compute.quality_metrics.metric_names, compute.quality_metrics.metric_params) == (None, {})
    assert dataclasses.asdict(dataset.generate) == {
        "seed": 0, "duration_s": 60.0, "num_channels": 32, "num_units": 5, "firing_rate_hz": 15.0, "n_merged": 3,
        "n_contaminated": 2, "contamination": 0.5, "n_noise": 6}


def test_mutable_defaults_are_not_shared_between_instances() -> None:
    first, second = DatasetConfig(), DatasetConfig()
    first.exclude_metrics.append("sd_ratio")
    first.compute.quality_metrics.metric_params["snr"] = {"peak_sign": "neg"}
    first.metadata["species"] = "mouse"
    assert (second.exclude_metrics, second.compute.quality_metrics.metric_params, second.metadata) == ([], {}, {})
    assert TrainConfig().search is not TrainConfig().search


# ----------------------------------------------------------------------------- where relative paths are resolved
def test_the_project_root_holds_conf() -> None:
    assert CONF_DIR == PROJECT_ROOT / "conf"
    assert (CONF_DIR / "train.yaml").is_file() and (PROJECT_ROOT / "pyproject.toml").is_file()


def test_no_root_resolves_against_the_project_root() -> None:
    cfg = TrainConfig(root=None)
    assert cfg.root_dir == PROJECT_ROOT
    assert cfg.resolve_path("experiments/x/m.csv") == PROJECT_ROOT / "experiments" / "x" / "m.csv"


def test_a_root_resolves_relative_paths_and_leaves_absolute_and_home_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = TrainConfig(root=str(tmp_path / "a" / ".."))
    assert cfg.root_dir == tmp_path.resolve()
    assert cfg.resolve_path("data/m.csv") == tmp_path.resolve() / "data" / "m.csv"
    assert cfg.resolve_path(Path("/abs/m.csv")) == Path("/abs/m.csv")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cfg.resolve_path("~/m.csv") == tmp_path / "home" / "m.csv"
    monkeypatch.chdir(tmp_path)
    assert TrainConfig(root="rel").root_dir == tmp_path.resolve() / "rel"  # a relative root: from the cwd
