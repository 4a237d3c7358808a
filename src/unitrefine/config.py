"""Typed configuration, validated at the boundary (Hydra/OmegaConf in, dataclasses out).

The schema is :mod:`unitrefine.config_schema`, the checks its types cannot express :mod:`unitrefine.config_values`;
their names are importable from here. Every default is in ``conf/`` (see :mod:`unitrefine.config_schema`).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from unitrefine.config_check import ConfigOrigin, format_problems, schema_problems
from unitrefine.config_schema import (
    CONF_DIR,
    MIN_UNIT_LIMIT,
    PROJECT_ROOT,
    CalibrationConfig,
    ComputeConfig,
    CVConfig,
    DatasetConfig,
    EnsembleConfig,
    GenerateConfig,
    MetricsConfig,
    OutputConfig,
    RecordingConfig,
    RegistryConfig,
    SearchConfig,
    TaskConfig,
    ThresholdConfig,
    TrackingConfig,
    TrainConfig,
)
from unitrefine.config_values import (
    REMOVED_KEYS,
    STUDY_RDB_SCHEMES,
    SUPPORTED_SCORING,
    check_values,
    drop_excluded_recordings,
    forget_removed_keys,
    removed_key_problems,
    storage_kind,
)
from unitrefine.errors import UnitRefineError

__all__ = [
    "CONF_DIR", "MIN_UNIT_LIMIT", "PROJECT_ROOT", "REMOVED_KEYS", "STUDY_RDB_SCHEMES", "SUPPORTED_SCORING",
    "CVConfig", "CalibrationConfig", "ComputeConfig", "DatasetConfig", "EnsembleConfig", "GenerateConfig",
    "MetricsConfig", "OutputConfig", "RecordingConfig", "RegistryConfig", "SearchConfig", "TaskConfig",
    "ThresholdConfig", "TrackingConfig", "TrainConfig", "compose_config", "config_origin", "default_unit_limits",
    "forget_removed_keys", "storage_kind", "validate_config",
]


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
        removed = removed_key_problems(plain)
        problems = removed + [p for p in schema_problems(plain, TrainConfig) if p[0] not in dict(removed)]
        if problems:
            raise UnitRefineError(format_problems(problems, origin))
        merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:  # what the schema walk does not see, e.g. an interpolation
        key = getattr(exc, "full_key", None) or "(top level)"
        message = str(exc).splitlines()[0]
        raise UnitRefineError(format_problems([(key, message)], origin)) from None
    assert isinstance(obj, TrainConfig)
    check_values(obj, _components())
    drop_excluded_recordings(obj)
    return obj


def _components() -> set[str]:
    """The components ``search.unit_limits`` may name: the estimator allowlist's buildable ones."""
    from unitrefine.search.estimators import REGISTRY  # sklearn: only when a training config is validated

    return {name for group in REGISTRY.values() for name, c in group.items() if c.build is not None}


def default_unit_limits() -> dict[str, int | None]:
    """``search.unit_limits`` as ``conf/train.yaml`` sets it (the components fitted on a subsample, and its size)."""
    return dict(_train_yaml_unit_limits())


@cache
def _train_yaml_unit_limits() -> dict[str, int | None]:
    limits = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "train.yaml").search.unit_limits)
    assert isinstance(limits, dict)
    return limits


def __getattr__(name: str) -> Any:
    """``DEFAULT_UNIT_LIMITS``: :func:`default_unit_limits`, read from ``conf/train.yaml`` when first asked for."""
    if name == "DEFAULT_UNIT_LIMITS":
        return default_unit_limits()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        An override Hydra cannot read, an unknown key or config option (with the closest known one), a key that
        no longer exists (:data:`REMOVED_KEYS`, with what to do instead), or ``+`` for a key that exists; the
        message names the override as typed.
    """
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from unitrefine.hydra_errors import explain_composition_error, explain_yaml_error

    overrides = list(overrides or [])
    if config_name in ("train", "promote"):
        removed = [(key, f"it no longer exists: {REMOVED_KEYS[key]}") for override in overrides
                   if not override.startswith("~") and (key := override.lstrip("+").split("=", 1)[0]) in REMOVED_KEYS]
        if removed:
            raise UnitRefineError(format_problems(removed, ConfigOrigin(tuple(overrides))))
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)
    except HydraException as exc:
        schema = TrainConfig if config_name in ("train", "promote") else None
        raise UnitRefineError(explain_composition_error(exc, overrides, config_name, CONF_DIR, schema)) from None
    except yaml.YAMLError as exc:
        raise UnitRefineError(explain_yaml_error(exc, CONF_DIR)) from None
    except UnicodeDecodeError as exc:
        raise UnitRefineError(f"A config file the {config_name} configuration reads is not UTF-8 text ({exc.reason} "
                              f"at byte {exc.start}); save it as UTF-8.") from None
    except ValueError as exc:  # what Hydra raises for some overrides it parsed but cannot apply (e.g. '=3')
        raise UnitRefineError(f"Could not apply the overrides {overrides} to the {config_name} configuration "
                              f"({exc}). Each override is key=value, e.g. search.n_trials=20.") from None


def config_origin(overrides: list[str], choices: dict[str, Any], config_name: str = "train") -> ConfigOrigin:
    """Where a configuration composed from ``conf/<config_name>.yaml`` came from (see :class:`ConfigOrigin`)."""
    return ConfigOrigin(tuple(overrides), dict(choices), config_name, CONF_DIR)
