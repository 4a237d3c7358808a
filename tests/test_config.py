"""Configs compose like the command line, and bad values fail at the boundary with the key named."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from unitrefine.config import CONF_DIR, TrainConfig, compose_config, config_origin, forget_removed_keys, validate_config
from unitrefine.errors import UnitRefineError
from unitrefine.search.search_space import parse_search_space

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_validates_and_has_a_valid_space(name: str) -> None:
    cfg = validate_config(compose_config([f"+experiment={name}"]))
    assert cfg.experiment_name == name
    parse_search_space(cfg.search_space)
    for rec in cfg.dataset.recordings:
        if cfg.dataset.generate is not None:  # generated on first use (unitrefine.data.synthetic)
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
    overrides = ["+experiment=mouse_v1", "dataset.exclude_recordings=[mouse1a_imec0,mouse1b_imec0]"]
    cfg = validate_config(compose_config(overrides))
    assert [r.id for r in cfg.dataset.recordings] == [
        "mouse2a_imec0", "mouse2b_imec0", "mouse3a_imec0", "mouse3b_imec0", "mouse3c_imec0", "mouse4_imec0",
        "mouse4_imec1"]
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
        (["search.n_trials=abc"], r"at key 'search\.n_trials': expected a whole number, got 'abc'"),
        (["+search.n_trails=5"],
         r"at key 'search\.n_trails': there is no such setting \(did you mean search\.n_trials\?\)"),
        (["search.n_trials=0"], r"search\.n_trials must be >= 1"),
        (["cv.group_by=animal"], r"cv\.group_by must be one of: recording, subject, null \(got 'animal'\)"),
        (["search.pruner=magic"], r"search\.pruner must be one of: median, hyperband, wilcoxon, none \(got 'magic'\)"),
        (["cv.n_splits=1"], r"cv\.n_splits must be >= 2 \(got 1\)"),
        (["cv.estimate_max_refits=1"], r"cv\.estimate_max_refits must be >= 2"),
        (["cv.scoring=f1_macro"], r"cv\.scoring must be balanced_accuracy \(got 'f1_macro'\): the ensemble's choice"),
        (["+search.unit_limits.svm=5000"], r"search\.unit_limits\.svm: 'svm' is not a component"),
        (["search.unit_limits.svc=50"], r"search\.unit_limits\.svc must be null \(no limit\) or at least 100"),
        (["search.unit_limits.svc=many"],
         r"at key 'search\.unit_limits\.svc': expected a whole number or null, got 'many'"),
        (["search.resume=stric"],
         r"search\.resume must be one of: true, false, strict \(got 'stric'; did you mean strict"),
        (["search.resume=1"], r"search\.resume must be one of: true, false, strict \(got '1'\)"),
    ],
)
def test_bad_values_name_the_key(overrides: list[str], match: str) -> None:
    with pytest.raises(UnitRefineError, match=match):
        validate_config(compose_config(overrides))


def test_search_resume_takes_strict_besides_true_and_false() -> None:
    assert [validate_config(compose_config([f"search.resume={v}"])).search.resume for v in ("strict", "false")] == [
        "strict", False]


def test_unit_limits_default_to_train_yaml_and_can_be_lifted() -> None:
    from unitrefine.config import DEFAULT_UNIT_LIMITS, default_unit_limits

    documented = yaml.safe_load((CONF_DIR / "train.yaml").read_text())["search"]["unit_limits"]
    assert validate_config(compose_config([])).search.unit_limits == documented
    assert default_unit_limits() == DEFAULT_UNIT_LIMITS == documented  # one source: conf/train.yaml
    assert (documented["svc"], documented["knn"]) == (5000, 5000)  # the quadratic ones are limited by default
    lifted = validate_config(compose_config(["search.unit_limits.svc=null", "+search.unit_limits.xgboost=20000"]))
    assert lifted.search.unit_limits["svc"] is None and lifted.search.unit_limits["xgboost"] == 20000


# ----------------------------------------------------------------------------- one source for every default
def _defaults_against_yaml(schema: type, values: dict[str, Any], prefix: str = "") -> tuple[list[str], list[str]]:
    """(keys whose schema default equals the composed YAML's value, problems): a key the YAML does not set, or a
    schema default that differs from the YAML's value. A dataset's keys are its file's, not defaults: skipped."""
    from unitrefine.config_check import unwrap_optional

    compared, problems = [], []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        if key in ("dataset", "registry.evaluation_dataset"):
            continue
        if f.name not in values:
            problems.append(f"{key}: no YAML file of the default composition sets it")
            continue
        inner, _ = unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(inner) and isinstance(values[f.name], dict):
            sub_compared, sub_problems = _defaults_against_yaml(inner, values[f.name], f"{key}.")
            compared, problems = compared + sub_compared, problems + sub_problems
            continue
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if default is dataclasses.MISSING or default == "???":
            continue  # no default in the schema: the YAML's is the only one
        if default != values[f.name]:
            problems.append(f"{key}: the schema says {default!r}, the YAML {values[f.name]!r}")
        compared.append(key)
    return compared, problems


def test_every_default_left_in_the_schema_is_the_yaml_value_and_the_yaml_sets_every_key() -> None:
    composed = OmegaConf.to_container(compose_config([]), resolve=True)
    compared, problems = _defaults_against_yaml(TrainConfig, composed)
    assert not problems, problems
    assert {"search.n_trials", "search.n_jobs", "cv.scoring", "cv.n_splits"} <= set(compared)  # the check ran
    composed["search"]["n_trials"] = 50  # a schema default of 40 disagrees: caught
    assert _defaults_against_yaml(TrainConfig, composed)[1] == ["search.n_trials: the schema says 40, the YAML 50"]
    del composed["ensemble"]["rounds"]  # a key the YAML stopped setting: caught
    assert "ensemble.rounds: no YAML file of the default composition sets it" in _defaults_against_yaml(
        TrainConfig, composed)[1]


def test_a_key_set_only_in_yaml_is_required_so_deleting_it_names_it() -> None:
    message = config_error(["+experiment=smoke", "~ensemble.rounds"])
    assert "at key 'ensemble.rounds'" in message and "it is required but not set" in message, message


# ----------------------------------------------------------------------------- keys that no longer exist
@pytest.mark.parametrize("override", ["task.positive_class=good", "+task.positive_class=good"])
def test_a_removed_key_given_on_the_command_line_says_it_no_longer_exists_and_what_to_do(override: str) -> None:
    message = config_error(["+experiment=smoke", override])
    assert message == (
        f"Invalid configuration at key 'task.positive_class' (set in your command-line override '{override}'): it no "
        "longer exists: a binary task's positive class is the second of task.classes (class code 1, the class "
        "threshold.tune's threshold is on), so task.positive_class was never read: list the classes in that order "
        "and delete task.positive_class."
    )


def test_a_removed_key_in_a_config_file_is_named_once_among_the_other_problems() -> None:
    cfg = compose_config(["+experiment=smoke"])
    with open_dict(cfg):
        cfg.task.positive_class = "good"  # as a user's conf/task/<name>.yaml of an older version would
    cfg.search.n_jobs = "two"
    with pytest.raises(UnitRefineError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert "at key 'task.positive_class': it no longer exists: a binary task's positive class is the second" in message
    assert "at key 'search.n_jobs': expected a whole number, got 'two'" in message
    assert message.count("task.positive_class'") == 1 and "there is no such setting" not in message


def test_a_recorded_configuration_forgets_the_removed_keys_it_holds() -> None:
    raw = OmegaConf.create(OmegaConf.to_container(compose_config(["+experiment=smoke"])))
    raw.task.positive_class = "good"  # a model folder's config.yaml written before the key was removed
    assert forget_removed_keys(raw) == ["task.positive_class"] and "positive_class" not in raw.task
    assert forget_removed_keys(raw) == []
    assert validate_config(raw).task.classes == ["other", "good"]


def test_unknown_experiment_is_a_clear_error() -> None:
    with pytest.raises(UnitRefineError, match=r"There is no experiment 'nope' \(no file conf/experiment/nope\.yaml\)"):
        compose_config(["+experiment=nope"])


def test_train_yaml_keeps_experiment_out_of_its_defaults() -> None:
    text = (CONF_DIR / "train.yaml").read_text()
    defaults = text.split("defaults:")[1].split("\n\n")[0]
    assert "experiment" not in defaults


# ----------------------------------------------------------------------------- configuration errors, as users see them
#: OmegaConf's and our schema's internal names, which must never reach the user.
INTERNAL = ("AnyNode", "ListConfig", "DictConfig", "TrainConfig", "SearchConfig", "DatasetConfig", "CVConfig",
            "is not a subclass", "full_key", "object_type", "HYDRA_FULL_ERROR")


def config_error(overrides: list[str]) -> str:
    """The message of composing and validating ``overrides`` as ``python -m unitrefine.train`` does."""
    with pytest.raises(UnitRefineError) as info:
        cfg = compose_config(overrides)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            hydra_cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True).hydra
        choices = dict(hydra_cfg.runtime.choices)
        validate_config(cfg, config_origin(overrides, choices))
    message = str(info.value)
    assert not [name for name in INTERNAL if name in message], message
    return message


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        # type mismatch
        ("search.n_trials=abc", ["at key 'search.n_trials'", "override 'search.n_trials=abc'",
                                 "expected a whole number", "got 'abc'"]),
        ("cv.refit_on_all=maybe", ["at key 'cv.refit_on_all'", "expected true or false, got 'maybe'"]),
        # a scalar where a list is expected
        ("cv.holdout_recordings=mouse2a_imec0", ["at key 'cv.holdout_recordings'", "expected a list such as [a,b]",
                                                 "got 'mouse2a_imec0'", "write cv.holdout_recordings=[mouse2a_imec0]"]),
        ("dataset.recordings=abc", ["at key 'dataset.recordings'", "a list of mappings such as [{id: ...",
                                    "got 'abc'"]),
        # text where a mapping (a dataset) is expected, and a list where a mapping is
        ("registry.evaluation_dataset=abc", ["at key 'registry.evaluation_dataset'", "expected a mapping of settings "
                                             "(name, mode, recordings", "or null, got 'abc'"]),
        ("search.unit_limits=[1]", ["at key 'search.unit_limits'", "it is a mapping", "search.unit_limits.<name>="]),
        ("cv.holdout_recordings={a:1}", ["at key 'cv.holdout_recordings'", "it is a list"]),
        # a required value not set
        ("experiment_name=???", ["at key 'experiment_name'", "it has no value", "experiment_name=<value>"]),
        # unknown keys, with and without '+', and one a YAML file does not set
        ("search.n_trails=5", ["at key 'search.n_trails'", "did you mean search.n_trials?",
                               "the settings under 'search'"]),
        ("+search.n_trails=5", ["at key 'search.n_trails'", "did you mean search.n_trials?"]),
        ("serch.n_trials=5", ["at key 'serch'", "did you mean search?"]),
        ("dataset.recordings.0.metrcs=x.csv", ["at key 'dataset.recordings.0.metrcs'",
                                               "did you mean dataset.recordings.0.metrics?"]),
        ("dataset.label_property=quality", ["none of the chosen YAML files sets it",
                                            "+dataset.label_property=quality"]),
        ("~serch", ["'~serch' removes 'serch'", "the settings at the top level are"]),
        # a bad choice
        ("search.pruner=mediam", ["search.pruner must be one of: median, hyperband, wilcoxon, none", "got 'mediam'",
                                  "did you mean median?"]),
        ("cv.group_by=animal", ["cv.group_by must be one of: recording, subject, null (got 'animal')"]),
        # override syntax
        ("search.n_trials=[1", ["Cannot read the override 'search.n_trials=[1'", "a list as key=[a,b]"]),
        ("search.n_trials", ["The argument 'search.n_trials' has no '='", "search.n_trials=<value>"]),
        ("search.n_trials=1,2", ["'search.n_trials=1,2' has a comma", "search.n_trials=[a,b]", "--multirun"]),
        ("dataset.recordings.9.id=x", ["the list 'dataset.recordings' has no item 9"]),
        # '+' for a key that exists, no '+' for a group that is not chosen, a group chosen twice
        ("+search.n_trials=3", ["'search.n_trials' already exists", "drop the '+'", "(search.n_trials=3)"]),
        ("+dataset=tutorial", ["adds a second dataset", "(dataset=tutorial)"]),
        # unknown config group options
        ("task=sua_vs_al", ["There is no task 'sua_vs_al'", "did you mean sua_vs_all?", "noise_vs_neural, sua_vs_all"]),
    ],
)
def test_config_errors_name_the_key_the_value_and_what_is_expected(override: str, fragments: list[str]) -> None:
    message = config_error(["+experiment=smoke", override])
    missing = [f for f in fragments if f not in message]
    assert not missing, (missing, message)


def test_a_mistyped_or_misplaced_experiment_gets_the_closest_name_and_the_fix() -> None:
    assert "There is no experiment 'smok' (no file conf/experiment/smok.yaml) (did you mean smoke?): choose one of: " \
           "mouse_3class_v1" in config_error(["+experiment=smok"])
    assert "add one with a '+': +experiment=smoke" in config_error(["experiment=smoke"])
    assert "experiment is chosen more than once" in config_error(["+experiment=smoke", "+experiment=mouse_v1"])


def test_a_bad_value_from_a_yaml_file_names_that_file_and_every_problem_is_listed() -> None:
    cfg = compose_config(["+experiment=smoke"])
    cfg.cv.holdout_recordings = "mouse2a_imec0"  # as if conf/experiment/smoke.yaml said so
    cfg.search.n_jobs = "two"  # conf/train.yaml sets search.n_jobs (smoke.yaml too: it wins)
    cfg.dataset.name = "???"  # conf/dataset/mouse_base.yaml is overridden by smoke.yaml's dataset.name
    cfg.tracking.uri = ["a"]  # only conf/tracking/local.yaml sets it
    origin = config_origin(["+experiment=smoke"], {"experiment": "smoke", "tracking": "local", "dataset": "mouse_base"})
    with pytest.raises(UnitRefineError) as info:
        validate_config(cfg, origin)
    message = str(info.value)
    assert message.startswith("Invalid configuration:\n  - ")
    assert "at key 'cv.holdout_recordings' (set in conf/experiment/smoke.yaml)" in message
    assert "at key 'search.n_jobs' (set in conf/experiment/smoke.yaml): expected a whole number, got 'two'" in message
    assert "at key 'dataset.name' (set in conf/experiment/smoke.yaml): it has no value" in message
    assert "at key 'tracking.uri' (set in conf/tracking/local.yaml): expected a single value or null, got [a]" \
        in message


def test_a_config_file_that_is_not_yaml_is_named_with_its_line(tmp_path: Path) -> None:
    from unitrefine.hydra_errors import explain_yaml_error

    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    bad = conf / "experiment" / "mine.yaml"
    bad.write_text("# @package _global_\nsearch:\n  n_trials: [3\ncv: {}\n")
    with pytest.raises(yaml.YAMLError) as info, bad.open() as stream:
        yaml.safe_load(stream)
    message = explain_yaml_error(info.value, conf)
    assert message.startswith("The config file conf/experiment/mine.yaml is not valid YAML, line 4, column 3:"), message


@pytest.mark.parametrize(("override", "fragment"), [
    ("=3", "Config group override must be a string or a list"),
    ("dataset.recordings.x=1", "invalid literal for int()"),
])
def test_an_override_hydra_parses_but_cannot_apply_is_a_user_error(override: str, fragment: str) -> None:
    with pytest.raises(UnitRefineError) as raised:
        compose_config([override])
    assert str(raised.value).startswith(f"Could not apply the overrides ['{override}'] to the train configuration (")
    assert fragment in str(raised.value) and "key=value" in str(raised.value)
