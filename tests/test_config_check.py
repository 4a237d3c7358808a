"""Shape and type checks by dotted key (unitrefine.config_check), called directly on small plain configurations."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest
from omegaconf import OmegaConf

from unitrefine.config import compose_config, config_origin
from unitrefine.config_check import (
    ConfigOrigin,
    did_you_mean,
    expected,
    format_problems,
    schema_problems,
    show,
    unwrap_optional,
)
from unitrefine.config_schema import (
    CVConfig,
    DatasetConfig,
    RecordingConfig,
    SearchConfig,
    TaskConfig,
    TrainConfig,
)

#: OmegaConf's node and container class names (and Python's reprs of types), which must never reach the user.
INTERNAL = ("AnyNode", "ListConfig", "DictConfig", "IntegerNode", "FloatNode", "BooleanNode", "StringNode",
            "omegaconf", "<class", "typing.", "NoneType")


def assert_plain(texts: list[str]) -> None:
    """No message names an OmegaConf class or a Python type repr."""
    leaked = [(name, text) for text in texts for name in INTERNAL if name in text]
    assert not leaked, leaked


# ----------------------------------------------------------------------------- helpers: suggestions, values, types
def test_did_you_mean_names_the_closest_option_or_nothing() -> None:
    assert did_you_mean("n_trails", ["n_jobs", "n_trials", "pruner"]) == " (did you mean n_trials?)"
    assert did_you_mean("n_trails", {"n_trials", "n_trials"}) == " (did you mean n_trials?)"  # a set: duplicates fold
    assert did_you_mean("zzz", ["n_jobs", "n_trials"]) == ""
    assert did_you_mean("x", []) == ""


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("abc", "'abc'"),
        ("", "''"),
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (2.5, "2.5"),
        (["a", 1, None, True], "[a, 1, null, true]"),
        (("a",), "[a]"),
        ({"k": False, "n": [1, 2]}, "{k: false, n: [1, 2]}"),
        ({}, "{}"),
    ],
)
def test_show_writes_a_value_as_yaml_or_an_override_would(value: Any, shown: str) -> None:
    assert show(value) == shown


def test_show_cuts_a_long_value_to_the_limit() -> None:
    assert show("x" * 100, limit=10) == "'xxxxxxx...'"
    assert show(list(range(50)), limit=12) == "[0, 1, 2,..."
    assert show("x" * 10, limit=10) == "'xxxxxxxxxx'"  # at the limit: kept whole


@pytest.mark.parametrize(
    ("tp", "unwrapped"),
    [
        (int | None, (int, True)),
        (Optional[list[str]], (list[str], True)),  # noqa: UP045 - the typing spelling is handled too
        (int, (int, False)),
        (int | str, (int | str, False)),
        (int | str | None, (int | str | None, False)),  # not one type: left as it is
    ],
)
def test_unwrap_optional_strips_none_from_a_single_type_only(tp: Any, unwrapped: tuple[Any, bool]) -> None:
    assert unwrap_optional(tp) == unwrapped


@pytest.mark.parametrize(
    ("tp", "text"),
    [
        (int, "a whole number"),
        (float | None, "a number or null"),
        (bool, "true or false"),
        (str | None, "a single value or null"),
        (list[str], "a list such as [a,b]"),
        (list[str] | None, "a list such as [a,b] or null"),
        (dict[str, int | None], "a mapping such as {key: value}"),
        (TaskConfig, "a mapping of settings (name, classes, mapping)"),
        (DatasetConfig | None, "a mapping of settings (name, mode, recordings, label_column, ...) or null"),
        (list[RecordingConfig], "a list of mappings such as [{id: ..., metrics: ..., labels: ...}]"),
        (Any, "a value"),
    ],
)
def test_expected_says_what_a_value_of_the_type_looks_like_in_yaml(tp: Any, text: str) -> None:
    assert expected(tp) == text


# ----------------------------------------------------------------------------- schema_problems, by dotted key
def test_wrong_scalars_are_named_by_key_with_the_value_given() -> None:
    value = {"n_trials": "abc", "n_jobs": 2.5, "timeout_s": "soon", "enqueue_defaults": "maybe", "storage": ["a"],
             "heartbeat_s": True, "unit_limits": {"svc": "many", "knn": None, "mlp": "3"}}
    assert schema_problems(value, SearchConfig, "search") == [
        ("search.n_trials", "expected a whole number, got 'abc'"),
        ("search.timeout_s", "expected a number or null, got 'soon'"),
        ("search.n_jobs", "expected a whole number, got 2.5"),
        ("search.storage", "expected a single value or null, got [a]"),
        ("search.heartbeat_s", "expected a whole number, got true"),
        ("search.enqueue_defaults", "expected true or false, got 'maybe'"),
        ("search.unit_limits.svc", "expected a whole number or null, got 'many'"),
    ]


def test_values_omegaconf_would_convert_are_accepted() -> None:
    value = {"n_trials": "3", "timeout_s": 60, "enqueue_defaults": "false", "storage": None, "resume": "strict",
             "unit_limits": {"svc": None}}
    assert schema_problems(value, SearchConfig, "search") == []


def test_a_scalar_for_a_list_gets_the_one_item_spelling_and_other_shapes_are_named() -> None:
    value = {"name": "d", "recordings": "abc", "exclude_metrics": 5, "compute": [1], "metadata": "x",
             "metric_names": {"a": 1}}
    assert schema_problems(value, DatasetConfig, "dataset") == [
        ("dataset.recordings", "expected a list of mappings such as [{id: ..., metrics: ..., labels: ...}], got 'abc'; "
                               "for a list of one, write dataset.recordings=[abc]"),
        ("dataset.metric_names", "expected a list such as [a,b] or null, got {a: 1}"),
        ("dataset.exclude_metrics", "expected a list such as [a,b], got 5; for a list of one, write "
                                    "dataset.exclude_metrics=[5]"),
        ("dataset.metadata", "expected a mapping such as {key: value}, got 'x'"),
        ("dataset.compute", "expected a mapping of settings (quality_metrics, template_metrics, pca_metrics, "
                            "extensions, ...), got [1]"),
    ]


def test_list_items_are_named_by_index_with_unknown_and_required_keys() -> None:
    value = {"name": "d", "recordings": [{"id": "a", "metrics": "a.csv"}, {"metrcs": "b.csv"}]}
    assert schema_problems(value, DatasetConfig, "dataset") == [
        ("dataset.recordings.1.metrcs", "there is no such setting (did you mean dataset.recordings.1.metrics?); the "
                                        "settings under 'dataset.recordings.1' are: id, metrics, labels, subject, "
                                        "analyzer"),
        ("dataset.recordings.1.id", "it is required but not set (expected a single value)"),
    ]


def test_at_the_top_level_unknown_and_unset_required_keys_are_all_listed() -> None:
    assert schema_problems({"nmae": "x"}, TaskConfig) == [
        ("nmae", "there is no such setting (did you mean name?); the settings at the top level are: name, classes, "
                 "mapping"),
        ("name", "it is required but not set (expected a single value)"),
        ("classes", "it is required but not set (expected a list such as [a,b])"),
        ("mapping", "it is required but not set (expected a mapping such as {key: value})"),
    ]


def test_missing_values_null_and_interpolations() -> None:
    assert schema_problems({"name": "???", "classes": None, "mapping": "${other.mapping}"}, TaskConfig, "task") == [
        ("task.name", "it has no value (???): set it, e.g. task.name=<value>"),
        ("task.classes", "expected a list such as [a,b], got null"),
    ]  # an interpolation is OmegaConf's to resolve
    assert schema_problems({"group_by": None, "n_splits": None}, CVConfig, "cv") == [
        ("cv.n_splits", "expected a whole number, got null"),
    ]  # group_by is optional; no CV key is required (they have defaults)


def test_free_form_values_take_anything() -> None:
    assert schema_problems({"classifier": {"svc": [1, "x", None]}}, Any, "search_space") == []
    assert schema_problems({"species": ["a"], "n": {"b": 1}}, dict[str, Any], "dataset.metadata") == []


def test_a_whole_composed_configuration_lists_every_problem_with_where_it_was_set() -> None:
    overrides = ["search.timeout_s=soon", "cv.n_splits=[3]", "tracking.enabled=maybe"]
    cfg = compose_config(overrides)
    cfg.cv.refit_on_all = "perhaps"  # as if conf/cv/default.yaml said so
    cfg.dataset.exclude_metrics = "sd_ratio"  # as if conf/dataset/tutorial.yaml said so
    plain = OmegaConf.to_container(cfg, resolve=True)
    problems = schema_problems(plain, TrainConfig)
    choices = {"dataset": "tutorial", "task": "sua_vs_all", "search_space": "default", "cv": "default",
               "tracking": "local"}
    message = format_problems(problems, config_origin(overrides, choices))
    assert message == (
        "Invalid configuration:\n"
        "  - at key 'dataset.exclude_metrics' (set in conf/dataset/tutorial.yaml): expected a list such as [a,b], got "
        "'sd_ratio'; for a list of one, write dataset.exclude_metrics=[sd_ratio]\n"
        "  - at key 'cv.n_splits' (set in your command-line override 'cv.n_splits=[3]'): expected a whole number, got "
        "[3]\n"
        "  - at key 'cv.refit_on_all' (set in conf/cv/default.yaml): expected true or false, got 'perhaps'\n"
        "  - at key 'search.timeout_s' (set in your command-line override 'search.timeout_s=soon'): expected a number "
        "or null, got 'soon'\n"
        "  - at key 'tracking.enabled' (set in your command-line override 'tracking.enabled=maybe'): expected true or "
        "false, got 'maybe'"
    )
    assert_plain([message])


def test_no_message_names_an_omegaconf_class_whatever_the_shape() -> None:
    shapes = ["abc", 1, 2.5, True, None, "???", [1], ["a", ["b"]], {"a": 1}, {"a": {"b": [1]}}]
    messages = [text for tp in (TrainConfig, DatasetConfig, list[RecordingConfig], dict[str, int | None], int, bool,
                                list[str] | None, float | None)
                for value in shapes for _, text in schema_problems(value, tp, "k")]
    assert len(messages) > 50  # most of the 80 combinations are mismatches, some with several problems
    assert_plain(messages)


# ----------------------------------------------------------------------------- where a key was set
@pytest.fixture
def conf(tmp_path: Path) -> Path:
    """A config directory: train.yaml, an experiment (global package) and a group option."""
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "cv").mkdir()
    (conf / "train.yaml").write_text("seed: 1\nsearch:\n  n_jobs: 2\n  n_trials: 40\n")
    (conf / "experiment" / "mine.yaml").write_text("# @package _global_\nsearch:\n  n_jobs: 3\n")
    (conf / "cv" / "default.yaml").write_text("n_splits: 5\n")
    return conf


def test_an_override_naming_the_key_its_parent_or_a_child_is_where_it_was_set(conf: Path) -> None:
    origin = ConfigOrigin(("+experiment=mine", "seed=4", "search.unit_limits={svc: 1}", "~cv.n_splits"),
                          {"experiment": "mine", "cv": "default"}, "train", conf)
    assert origin.describe("seed") == "your command-line override 'seed=4'"
    assert origin.describe("search.unit_limits.svc") == "your command-line override 'search.unit_limits={svc: 1}'"
    assert origin.describe("cv") == "your command-line override '~cv.n_splits'"
    assert origin.describe("experiment") == "the YAML config or a command-line override"  # a group option: skipped
    assert origin.describe("search.n_jobs") == "conf/experiment/mine.yaml"  # not the +experiment override


def test_the_config_file_with_the_highest_precedence_that_sets_the_key_is_named(conf: Path) -> None:
    origin = ConfigOrigin((), {"experiment": "mine", "cv": "default"}, "train", conf)
    assert origin.describe("search.n_jobs") == "conf/experiment/mine.yaml"  # the experiment wins over train.yaml
    assert origin.describe("search.n_trials") == "conf/train.yaml"
    assert origin.describe("cv.n_splits") == "conf/cv/default.yaml"  # a group file holds the group's keys
    assert origin.describe("cv.group_by") == "the YAML config or a command-line override"  # no file sets it
    without_experiment = ConfigOrigin((), {"cv": "default"}, "train", conf)
    assert without_experiment.describe("search.n_jobs") == "conf/train.yaml"
    assert ConfigOrigin().describe("search.n_jobs") == "the YAML config or a command-line override"  # no conf_dir


def test_format_problems_one_line_or_a_list_and_no_origin() -> None:
    origin = ConfigOrigin(("seed=x",))
    assert format_problems([("seed", "expected a whole number, got 'x'")], origin) == (
        "Invalid configuration at key 'seed' (set in your command-line override 'seed=x'): expected a whole number, "
        "got 'x'.")
    assert format_problems([("seed", "p1"), ("cv.n_splits", "p2")], None) == (
        "Invalid configuration:\n  - at key 'seed': p1\n  - at key 'cv.n_splits': p2")
