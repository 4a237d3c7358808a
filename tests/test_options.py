"""The options of predict and suggest: one schema each, sharing their common fields, with their defaults in
conf/<command>.yaml only, checked and converted by type."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from unitrefine.apply.active import SuggestConfig, parse_suggest_config
from unitrefine.apply.prediction import PredictConfig, parse_predict_config
from unitrefine.config import CONF_DIR
from unitrefine.errors import UnitRefineError
from unitrefine.options import ApplyOptions

SCHEMAS = {"predict": PredictConfig, "suggest": SuggestConfig}
REQUIRED = {"model": "m", "data": "d.csv", "output": "o.csv"}


def yaml_options(command: str) -> dict:
    options = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{command}.yaml"))
    return {k: v for k, v in options.items() if k not in ("defaults", "hydra")}


@pytest.mark.parametrize("command", sorted(SCHEMAS))
def test_the_schema_has_the_yaml_options_and_no_defaults_of_its_own(command: str) -> None:
    fields = dataclasses.fields(SCHEMAS[command])
    assert {f.name for f in fields} == set(yaml_options(command))
    with_default = [f.name for f in fields
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
    assert with_default == []  # conf/<command>.yaml is the one source
    shared = {f.name for f in dataclasses.fields(ApplyOptions)}
    assert shared < {f.name for f in fields} and {"data", "output", "trust", "tracking_uri", "n_jobs"} <= shared


@pytest.mark.parametrize(("command", "parse"), [("predict", parse_predict_config), ("suggest", parse_suggest_config)])
def test_options_not_given_take_the_yaml_values(command: str, parse: object) -> None:
    options = parse(dict(REQUIRED))
    defaults = {k: v for k, v in yaml_options(command).items() if k not in REQUIRED}
    assert {k: getattr(options, k) for k in defaults} == defaults


def test_flags_and_numbers_given_as_text_are_converted_by_type() -> None:
    options = parse_predict_config({**REQUIRED, "overwrite": "false", "strict": "true", "n_jobs": "3", "trust": "t"})
    assert (options.overwrite, options.strict, options.n_jobs, options.trust) == (False, True, 3, ["t"])
    assert parse_suggest_config({**REQUIRED, "n": "5"}).n == 5


def test_a_value_of_the_wrong_shape_is_named_with_what_is_expected() -> None:
    with pytest.raises(UnitRefineError) as info:
        parse_suggest_config({**REQUIRED, "labels": ["a", "b"]})
    assert str(info.value) == ("Invalid suggest option(s): labels: expected a single value or null, got [a, b]. See "
                               "python -m unitrefine.suggest --help.")
    with pytest.raises(UnitRefineError, match=r"Invalid predict option\(s\): phy_folder: expected a single value"):
        parse_predict_config({**REQUIRED, "phy_folder": {"a": 1}})


def test_suggest_applies_the_model_with_its_shared_options_and_none_of_predicts_own() -> None:
    suggest = parse_suggest_config({**REQUIRED, "trust": ["t"], "impute_missing": ["snr"], "strict": True})
    predict = suggest.predict_config()
    shared = [f.name for f in dataclasses.fields(ApplyOptions)]
    assert {k: getattr(predict, k) for k in shared} == {k: getattr(suggest, k) for k in shared}
    assert (predict.model, predict.set_properties, predict.phy_folder, predict.review) == (["m"], False, None, None)
