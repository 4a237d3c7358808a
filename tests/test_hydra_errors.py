"""Hydra's real composition errors, translated by unitrefine.hydra_errors into the user's terms.

Each exception is what Hydra's compose API really raises for a bad override (or a bad config file); the test
passes it through the module's functions and checks the message.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException

from unitrefine.config_schema import CONF_DIR, TrainConfig
from unitrefine.hydra_errors import SYNTAX, explain_composition_error, explain_yaml_error

#: Hydra's and OmegaConf's internals, which must not reach the user.
INTERNAL = ("Config search path", "provider=", "hydra.cc", "HYDRA_FULL_ERROR", "ConfigAttributeError",
            "ConfigKeyError", "ConfigCompositionException", "full_key", "object_type", "DictConfig", "ListConfig")


def hydra_error(overrides: list[str], config_name: str = "train", conf_dir: Path = CONF_DIR) -> HydraException:
    """What Hydra raises composing ``conf_dir/<config_name>.yaml`` with ``overrides``."""
    with pytest.raises(HydraException) as info, initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        compose(config_name=config_name, overrides=overrides)
    return info.value


def explain(overrides: list[str], config_name: str = "train", conf_dir: Path = CONF_DIR,
            schema: type | None = TrainConfig) -> str:
    """The message for composing ``overrides``, checked free of Hydra's internals."""
    message = explain_composition_error(hydra_error(overrides, config_name, conf_dir), overrides, config_name,
                                        conf_dir, schema)
    assert not [name for name in INTERNAL if name in message], message
    return message


# ----------------------------------------------------------------------------- override syntax
def test_an_override_without_equals_says_how_to_write_it() -> None:
    assert explain(["+seed"]) == (f"The argument '+seed' has no '=': write seed=<value>. To write one: {SYNTAX}. "
                                  "See python -m unitrefine.train --help.")


def test_an_unreadable_override_keeps_the_parser_detail_without_hydras_links() -> None:
    message = explain(["seed=}"])
    assert message.startswith("Cannot read the override 'seed=}' (extraneous input '}' expecting {<EOF>, ")
    assert message.endswith(f"). To write an override: {SYNTAX}. See python -m unitrefine.train --help.")


# ----------------------------------------------------------------------------- config group options
def test_an_unknown_group_option_gets_the_closest_and_every_option() -> None:
    assert explain(["search_space=fats"]) == (
        "There is no search_space 'fats' (no file conf/search_space/fats.yaml) (did you mean fast?): choose one of: "
        "default, fast (the files in conf/search_space/).")


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    """A small config directory: train.yaml choosing task a, and an empty group."""
    conf = tmp_path / "conf"
    for group in ("experiment", "task", "empty"):
        (conf / group).mkdir(parents=True)
    (conf / "train.yaml").write_text("defaults:\n  - task: a\n  - _self_\nseed: 1\n")
    (conf / "task" / "a.yaml").write_text("name: a\n")
    (conf / "task" / "binary.yaml").write_text("name: b\n")
    return conf


def test_an_unknown_option_named_in_another_config_file_names_that_file(conf: Path) -> None:
    (conf / "experiment" / "mine.yaml").write_text("# @package _global_\ndefaults:\n  - /task@other: binry\n")
    assert explain(["+experiment=mine"], conf_dir=conf, schema=None) == (
        "There is no task 'binry' (no file conf/task/binry.yaml) (did you mean binary?): choose one of: a, binary "
        "(the files in conf/task/). It is named in conf/experiment/mine.yaml.")


def test_an_option_of_an_empty_group_says_the_group_is_empty(conf: Path) -> None:
    assert explain(["+empty=x"], conf_dir=conf, schema=None) == (
        "There is no empty 'x' (no file conf/empty/x.yaml): conf/empty/ is empty.")


def test_a_group_added_again_with_plus_says_to_drop_it() -> None:
    assert explain(["+task=three_class"]) == (
        "'+task=three_class' adds a second task, but one is already chosen (by conf/train.yaml or the experiment): "
        "drop the '+' to replace it (task=three_class).")


# ----------------------------------------------------------------------------- unknown keys, with did-you-mean
def test_a_mistyped_key_gets_the_closest_setting_and_its_siblings() -> None:
    assert explain(["tracking.enabld=true"]) == (
        "Invalid configuration at key 'tracking.enabld' (set in your command-line override 'tracking.enabld=true'): "
        "there is no such setting (did you mean tracking.enabled?); the settings under 'tracking' are: "
        "artifact_location, enabled, model_name, register, uri.")


def test_the_schema_suggests_settings_no_yaml_file_sets() -> None:
    overrides = ["dataset.label_propery=quality"]
    head = ("Invalid configuration at key 'dataset.label_propery' (set in your command-line override "
            "'dataset.label_propery=quality'): there is no such setting")
    assert explain(overrides) == (
        f"{head} (did you mean dataset.label_property?); the settings under 'dataset' are: compute, exclude_metrics, "
        "exclude_recordings, generate, label_column, label_property, metadata, metric_names, mode, name, recordings, "
        "strict.")
    assert explain(overrides, schema=None) == (  # without it, only the composed keys are known
        f"{head}; the settings under 'dataset' are: exclude_metrics, exclude_recordings, label_column, metadata, "
        "metric_names, mode, name, recordings.")


def test_a_new_entry_of_a_free_form_mapping_is_told_to_use_plus() -> None:
    assert explain(["search.unit_limits.xgboost=20000"]) == (
        "Invalid configuration at key 'search.unit_limits.xgboost' (set in your command-line override "
        "'search.unit_limits.xgboost=20000'): it is a new entry of 'search.unit_limits', so add it with a '+': "
        "+search.unit_limits.xgboost=20000")


def test_an_unknown_option_of_a_command_without_schema_lists_its_options() -> None:
    assert explain(["modle=m"], config_name="predict", schema=None) == (
        "Invalid configuration at key 'modle' (set in your command-line override 'modle=m'): predict has no such "
        "option (did you mean model?); the options are: compute_missing, data, impute_missing, model, n_jobs, "
        "noise_label, output, overwrite, phy_folder, review, save_metrics, set_properties, strict, tracking_uri, "
        "trust. See python -m unitrefine.predict --help.")


def test_removing_a_key_that_is_not_there_gets_the_closest_sibling() -> None:
    assert explain(["~search.unit_limits.sv"]) == (
        "'~search.unit_limits.sv' removes 'search.unit_limits.sv', which is not in the configuration (did you mean "
        "search.unit_limits.svc?); the settings under 'search.unit_limits' are: extra_trees, gradient_boosting, knn, "
        "mlp, random_forest, svc.")


def test_an_item_past_the_end_of_an_empty_list_says_to_give_the_whole_list() -> None:
    assert explain(["cv.holdout_recordings.0=mouse2a_imec0"]) == (
        "Invalid configuration at key 'cv.holdout_recordings.0' (set in your command-line override "
        "'cv.holdout_recordings.0=mouse2a_imec0'): the list 'cv.holdout_recordings' has no item 0 (they count from "
        "0); give all of it: cv.holdout_recordings=[...].")


# ----------------------------------------------------------------------------- anything else
def test_another_error_keeps_hydras_words_without_its_search_path() -> None:
    message = explain([], config_name="nope", schema=None)
    assert message.startswith("Could not compose the nope configuration: Cannot find primary config 'nope'. Check "
                              "that it's in your config search path.")
    assert message.endswith(" See python -m unitrefine.nope --help.")


# ----------------------------------------------------------------------------- config files that are not YAML
@pytest.mark.parametrize(
    ("text", "where"),
    [("# @package _global_\nseed: [1\n", "line 3, column 1: expected ',' or ']', but got '<stream end>'"),
     ("# @package _global_\nseed:\n\t- 1\n", "line 3, column 1: found character '\\t' that cannot start any token")],
)
def test_a_config_file_hydra_cannot_parse_is_named_with_line_and_problem(conf: Path, text: str, where: str) -> None:
    (conf / "experiment" / "bad.yaml").write_text(text)
    with pytest.raises(yaml.YAMLError) as info, initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        compose(config_name="train", overrides=["+experiment=bad"])
    assert explain_yaml_error(info.value, conf) == (
        f"The config file conf/experiment/bad.yaml is not valid YAML, {where}. Fix its syntax (indentation, brackets, "
        "quotes).")
    elsewhere = conf.parent / "other" / "conf"  # a conf_dir the file is not under: its full path
    assert explain_yaml_error(info.value, elsewhere).startswith(
        f"The config file {conf / 'experiment' / 'bad.yaml'} is not valid YAML, line 3, column 1: ")
