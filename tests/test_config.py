"""Configs compose like the command line, and bad values fail at the boundary with the key named."""

from __future__ import annotations

import pytest

from unitrefine.config import CONF_DIR, compose_config, validate_config
from unitrefine.errors import UnitRefineError
from unitrefine.search_space import parse_search_space

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_validates_and_has_a_valid_space(name: str) -> None:
    cfg = validate_config(compose_config([f"+experiment={name}"]))
    assert cfg.experiment_name == name
    parse_search_space(cfg.search_space)
    for rec in cfg.dataset.recordings:
        if cfg.dataset.generate is not None:  # generated on first use (unitrefine.synthetic)
            continue
        path = rec.metrics if cfg.dataset.mode == "csv" else rec.analyzer
        assert path is not None and cfg.resolve_path(path).exists(), path
        assert rec.labels is None or cfg.resolve_path(rec.labels).is_file(), rec.labels


def test_mouse_v1_is_sua_vs_all_on_nine_recordings_grouped_with_mouse3_held_out() -> None:
    cfg = validate_config(compose_config(["+experiment=mouse_v1"]))
    assert cfg.task.name == "sua_vs_all" and cfg.task.classes == ["other", "good"]
    assert len(cfg.dataset.recordings) == 9
    assert cfg.cv.group_by == "recording"
    assert cfg.cv.holdout_recordings == ["mouse3a_imec0", "mouse3b_imec0", "mouse3c_imec0"]


@pytest.mark.parametrize(("name", "task"), [("mouse_noise_v1", "noise_vs_neural"), ("mouse_3class_v1", "three_class")])
def test_the_other_mouse_experiments_differ_from_mouse_v1_only_in_task(name: str, task: str) -> None:
    base = validate_config(compose_config(["+experiment=mouse_v1"]))
    cfg = validate_config(compose_config([f"+experiment={name}"]))
    assert cfg.task.name == task and cfg.experiment_name == name
    assert (cfg.dataset, cfg.cv, cfg.search, cfg.ensemble) == (base.dataset, base.cv, base.search, base.ensemble)


def test_exclude_recordings_removes_them_and_rejects_unknown_or_held_out_ids() -> None:
    cfg = validate_config(compose_config(["+experiment=mouse_v1", "dataset.exclude_recordings=[mouse1a_imec0,mouse1b_imec0]"]))
    assert [r.id for r in cfg.dataset.recordings] == [
        "mouse2a_imec0", "mouse2b_imec0", "mouse3a_imec0", "mouse3b_imec0", "mouse3c_imec0", "mouse4_imec0", "mouse4_imec1"]
    with pytest.raises(UnitRefineError, match=r"names \['mouse9'\], which are not recordings"):
        validate_config(compose_config(["+experiment=mouse_v1", "dataset.exclude_recordings=[mouse9]"]))
    with pytest.raises(UnitRefineError, match=r"both excluded from the dataset and held out"):
        validate_config(compose_config(["+experiment=mouse_v1", "dataset.exclude_recordings=[mouse3a_imec0]"]))


def test_keys_other_tooling_relies_on_exist() -> None:
    cfg = validate_config(compose_config(
        ["seed=3", "search.n_trials=7", "search.timeout_s=60", "search.n_jobs=1", "search.storage=sqlite:///x.db",
         "tracking.uri=sqlite:///y.db", "experiment_name=z"]
    ))
    assert (cfg.seed, cfg.search.n_trials, cfg.search.timeout_s, cfg.search.n_jobs) == (3, 7, 60, 1)
    assert (cfg.search.storage, cfg.tracking.uri, cfg.experiment_name) == ("sqlite:///x.db", "sqlite:///y.db", "z")


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["search.n_trials=abc"], r"search\.n_trials"),
        (["+search.n_trails=5"], r"n_trails"),
        (["search.n_trials=0"], r"search\.n_trials must be >= 1"),
        (["cv.group_by=animal"], r"cv\.group_by"),
        (["search.pruner=magic"], r"search\.pruner"),
        (["cv.n_splits=1"], r"cv\.n_splits"),
        (["cv.estimate_max_refits=1"], r"cv\.estimate_max_refits must be >= 2"),
        (["task.positive_class=great"], r"positive_class 'great'"),
        (["+search.unit_limits.svm=5000"], r"search\.unit_limits\.svm: 'svm' is not a component"),
        (["search.unit_limits.svc=50"], r"search\.unit_limits\.svc must be null \(no limit\) or at least 100"),
        (["search.unit_limits.svc=many"], r"search\.unit_limits"),
    ],
)
def test_bad_values_name_the_key(overrides: list[str], match: str) -> None:
    with pytest.raises(UnitRefineError, match=match):
        validate_config(compose_config(overrides))


def test_unit_limits_default_to_the_documented_values_and_can_be_lifted() -> None:
    from unitrefine.config import DEFAULT_UNIT_LIMITS

    assert validate_config(compose_config([])).search.unit_limits == DEFAULT_UNIT_LIMITS
    assert DEFAULT_UNIT_LIMITS["svc"] is not None and DEFAULT_UNIT_LIMITS["knn"] is not None
    lifted = validate_config(compose_config(["search.unit_limits.svc=null", "+search.unit_limits.xgboost=20000"]))
    assert lifted.search.unit_limits["svc"] is None and lifted.search.unit_limits["xgboost"] == 20000


def test_unknown_experiment_is_a_clear_error() -> None:
    with pytest.raises(UnitRefineError, match="experiment/nope"):
        compose_config(["+experiment=nope"])


def test_train_yaml_keeps_experiment_out_of_its_defaults() -> None:
    text = (CONF_DIR / "train.yaml").read_text()
    defaults = text.split("defaults:")[1].split("\n\n")[0]
    assert "experiment" not in defaults
