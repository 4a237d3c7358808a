"""Search spaces: validation of YAML spaces, Optuna sampling, and that every shipped entry fits."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from threadpoolctl import threadpool_limits

from unitrefine.config import CONF_DIR
from unitrefine.errors import UnitRefineError
from unitrefine.search.estimators import GROUPS
from unitrefine.search.pipeline import build_pipeline
from unitrefine.search.search_space import Choice, SearchSpace, parse_search_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACES = CONF_DIR / "search_space"


def load_raw(name: str) -> dict[str, Any]:
    """A shipped search space as the config system hands it over (plain containers)."""
    raw = OmegaConf.to_container(OmegaConf.load(SPACES / f"{name}.yaml"))
    assert isinstance(raw, dict)
    return raw


DEFAULT = load_raw("default")
CLASSIFIERS = list(DEFAULT["classifier"])
ENTRIES = [(slot, choice) for slot in GROUPS for choice in DEFAULT[slot]]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Fit single-threaded like the objective does (OpenMP on 2 shared cores otherwise crawls)."""
    with threadpool_limits(limits=1):
        yield


def make_data(n_classes: int = 2, n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """120 x 5 float32 features, ~10% NaN, a learnable label (binary: ~25% positives)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 5))
    score = z[:, 0] + 0.5 * z[:, 1]
    cuts = [0.75] if n_classes == 2 else [0.4, 0.75]
    y = np.digitize(score, np.quantile(score, cuts)).astype(np.int64)
    X = z.astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    return pd.DataFrame(X, columns=[f"m{i}" for i in range(5)]), y


@pytest.fixture(scope="module")
def binary() -> tuple[pd.DataFrame, np.ndarray]:
    X, y = make_data(2)
    assert 0.2 < y.mean() < 0.3 and 0.05 < X.isna().to_numpy().mean() < 0.15
    return X, y


@pytest.fixture(scope="module")
def three_class() -> tuple[pd.DataFrame, np.ndarray]:
    return make_data(3)


# --------------------------------------------------------------------------------------------------
# Helpers that check sampled values against the raw YAML (independently of the parsed Param objects)
# --------------------------------------------------------------------------------------------------


def is_range(raw: Any) -> bool:
    return isinstance(raw, dict)


def is_int_range(raw: dict[str, Any]) -> bool:
    return all(isinstance(raw[k], int) for k in ("low", "high")) and isinstance(raw.get("step") or 1, int)


def assert_value_fits(raw: Any, value: Any, where: str) -> None:
    """``value`` is a legal draw of the raw YAML parameter ``raw``."""
    if isinstance(raw, list):
        assert value in raw, f"{where}: {value!r} not among {raw}"
        return
    assert is_range(raw), f"{where}: a fixed value must not be sampled"
    assert raw["low"] <= value <= raw["high"], f"{where}: {value!r} outside [{raw['low']}, {raw['high']}]"
    if is_int_range(raw):
        assert type(value) is int, f"{where}: int range gave {type(value).__name__} {value!r}"
        assert (value - raw["low"]) % (raw.get("step") or 1) == 0, f"{where}: {value} off the step grid"
    else:
        assert type(value) is float, f"{where}: float range gave {type(value).__name__} {value!r}"


def sampled_keys(raw_space: dict[str, Any], spec: dict[str, Choice]) -> set[str]:
    """The Optuna names a trial of ``spec`` must hold: each slot plus ``<choice>.<param>`` of non-fixed params."""
    keys = set(GROUPS)
    for slot, choice in spec.items():
        for p, rawp in (raw_space[slot][choice.name] or {}).items():
            if isinstance(rawp, (list, dict)):
                keys.add(f"{choice.name}.{p}")
    return keys


def restricted(slot: str, choice: str) -> dict[str, Any]:
    """default.yaml cut down to ``choice`` in ``slot`` and the first choice, at its defaults, of every other slot
    (so that only ``choice``'s parameters are drawn)."""
    out = {}
    for s in GROUPS:
        out[s] = {choice: copy.deepcopy(DEFAULT[s][choice])} if s == slot else {next(iter(DEFAULT[s])): {}}
    return out


# --------------------------------------------------------------------------------------------------
# Parsing the shipped spaces
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "fast"])
def test_shipped_spaces_parse_with_every_slot_choice_and_param(name: str) -> None:
    raw = load_raw(name)
    space = parse_search_space(raw)
    assert list(space.slots) == list(GROUPS)
    for slot in GROUPS:
        assert list(space.slots[slot]) == list(raw[slot]), slot
        for choice, params in raw[slot].items():
            parsed = space.slots[slot][choice]
            assert set(parsed) == set(params or {}), f"{slot}.{choice}"
            for p, rawp in (params or {}).items():
                kind = parsed[p].kind
                if isinstance(rawp, list):
                    assert kind == "categorical" and list(parsed[p].choices) == rawp
                elif isinstance(rawp, dict):
                    assert kind == ("int" if is_int_range(rawp) else "float"), f"{slot}.{choice}.{p}"
                    assert (parsed[p].low, parsed[p].high) == (rawp["low"], rawp["high"])
                    assert parsed[p].log == bool(rawp.get("log", False))
                else:
                    assert kind == "fixed" and parsed[p].value == rawp


def test_default_space_parses_known_kinds() -> None:
    """Spot checks that pin the meaning of the YAML forms on the shipped file."""
    slots = parse_search_space(DEFAULT).slots
    rf = slots["classifier"]["random_forest"]
    assert (rf["n_estimators"].kind, rf["n_estimators"].step) == ("int", 50)
    assert rf["max_depth"].kind == "categorical" and rf["max_depth"].choices[0] is None
    assert rf["min_samples_leaf"].kind == "int" and rf["min_samples_leaf"].log
    c = slots["classifier"]["logistic_regression"]["C"]
    assert (c.kind, c.low, c.high, c.log) == ("float", 1.0e-3, 100.0, True)
    assert slots["scaler"]["none"] == {} and slots["resampler"]["none"] == {}


# --------------------------------------------------------------------------------------------------
# Bad spaces: a UnitRefineError naming the key path
# --------------------------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting ``raw[a][b][c] = value`` for ``path`` = ``"a.b.c"``."""

    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _rename(slot: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        raw[slot][new] = raw[slot].pop(old)

    return mutate


def _rename_param(slot: str, choice: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        raw[slot][choice][new] = raw[slot][choice].pop(old)

    return mutate


def _delete(slot: str) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        del raw[slot]

    return mutate


BAD_SPACES = [
    # (id, mutation, key path the message must name, other words it must name)
    ("unknown_slot", _set("classifer", {"random_forest": {}}), "search_space", ["unknown slots ['classifer']"]),
    (
        "unknown_component",
        _rename("classifier", "random_forest", "random_forrest"),
        "search_space.classifier.random_forrest",
        ["'random_forrest' is not an allowed classifier", "random_forest"],
    ),
    ("unknown_imputer", _rename("imputer", "knn", "knn_imputer"), "search_space.imputer.knn_imputer",
     ["'knn_imputer' is not an allowed imputer"]),
    (
        "unknown_hyperparameter",
        _rename_param("classifier", "random_forest", "max_depth", "max_dept"),
        "search_space.classifier.random_forest",
        ["unknown parameters ['max_dept']"],
    ),
    ("param_on_none", _set("scaler.none", {"with_mean": True}), "search_space.scaler.none",
     ["unknown parameters ['with_mean']"]),
    (
        "seed_is_not_searchable",
        _set("classifier.random_forest.random_state", 3),
        "search_space.classifier.random_forest",
        ["unknown parameters ['random_state']"],
    ),
    (
        "low_above_high",
        _set("classifier.logistic_regression.C", {"low": 100.0, "high": 1.0e-3, "log": True}),
        "search_space.classifier.logistic_regression.C",
        ["low (100.0) must be below high (0.001)"],
    ),
    (
        "low_equals_high",
        _set("imputer.knn.n_neighbors", {"low": 5, "high": 5}),
        "search_space.imputer.knn.n_neighbors",
        ["low (5) must be below high (5)"],
    ),
    (
        "log_low_zero",
        _set("classifier.svc.gamma", {"low": 0.0, "high": 1.0, "log": True}),
        "search_space.classifier.svc.gamma",
        ["a log range needs low > 0 (got 0.0)"],
    ),
    (
        "log_low_negative",
        _set("classifier.hist_gradient_boosting.l2_regularization", {"low": -1.0, "high": 10.0, "log": True}),
        "search_space.classifier.hist_gradient_boosting.l2_regularization",
        ["a log range needs low > 0 (got -1.0)"],
    ),
    (
        "log_with_step",
        _set("classifier.gradient_boosting.n_estimators", {"low": 50, "high": 300, "step": 50, "log": True}),
        "search_space.classifier.gradient_boosting.n_estimators",
        ["cannot have both log and step"],
    ),
    (
        "low_as_string",
        _set("classifier.logistic_regression.C", {"low": "1e-3", "high": 100.0, "log": True}),
        "search_space.classifier.logistic_regression.C",
        ["low and high must be finite numbers (got '1e-3', 100.0)"],
    ),
    (
        "high_as_string",
        _set("classifier.svc.C", {"low": 1.0e-2, "high": "1e2", "log": True}),
        "search_space.classifier.svc.C",
        ["low and high must be finite numbers (got 0.01, '1e2')"],
    ),
    ("bool_as_number", _set("classifier.svc.C", {"low": True, "high": 10.0}), "search_space.classifier.svc.C",
     ["low and high must be finite numbers (got True, 10.0)"]),
    ("empty_slot", _set("scaler", {}), "search_space.scaler", ["list at least one of ['min_max', 'none'"]),
    ("null_slot", _set("scaler", None), "search_space.scaler", ["list at least one of ['min_max', 'none'"]),
    ("missing_slot", _delete("resampler"), "search_space.resampler", ["list at least one of ['none', 'random_over'"]),
    (
        "range_unknown_key",
        _set("classifier.xgboost.max_depth", {"low": 2, "high": 8, "lgo": True}),
        "search_space.classifier.xgboost.max_depth",
        ["a range is {low: ..., high: ...", "'lgo': True"],
    ),
    (
        "range_without_high",
        _set("classifier.xgboost.max_depth", {"low": 2}),
        "search_space.classifier.xgboost.max_depth",
        ["a range is {low: ..., high: ...", "(got {'low': 2})"],
    ),
    (
        "empty_choice_list",
        _set("classifier.random_forest.max_depth", []),
        "search_space.classifier.random_forest.max_depth",
        ["a choice list must be a non-empty list of plain values (got [])"],
    ),
    ("nested_choice_list", _set("classifier.mlp.n_units", [[32, 64]]), "search_space.classifier.mlp.n_units",
     ["a choice list must be a non-empty list of plain values (got [[32, 64]])"]),
    ("params_not_a_mapping", _set("classifier.svc", [1.0]), "search_space.classifier.svc",
     ["expected a mapping of parameters (or {}), got [1.0]"]),
]


@pytest.mark.parametrize(("mutate", "path", "words"), [c[1:] for c in BAD_SPACES], ids=[c[0] for c in BAD_SPACES])
def test_bad_space_raises_naming_the_key_path(mutate: Callable, path: str, words: list[str]) -> None:
    raw = copy.deepcopy(DEFAULT)
    mutate(raw)
    with pytest.raises(UnitRefineError) as excinfo:
        parse_search_space(raw)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: "), message  # the key path first, then what is wrong with it
    assert words, "each case names what the message must say"
    for word in words:
        assert word in message, message


def test_yaml_1e_minus_3_is_refused_with_a_hint() -> None:
    """Plain YAML (1.1) reads ``1e-3`` as a string; the error names the key and says how to write it."""
    raw = copy.deepcopy(DEFAULT)
    raw["classifier"]["logistic_regression"] = yaml.safe_load("C: {low: 1e-3, high: 100.0, log: true}")
    assert raw["classifier"]["logistic_regression"]["C"]["low"] == "1e-3"
    with pytest.raises(UnitRefineError, match=r"search_space\.classifier\.logistic_regression\.C.*1\.0e-3"):
        parse_search_space(raw)


MORE_BAD_SPACES = [
    pytest.param(
        _set("classifier", ["random_forest", "svc"]),
        "search_space.classifier",
        "expected a mapping of choices to parameters",
        id="slot_as_list",
    ),
    pytest.param(
        _set("classifier.random_forest.n_estimators", {"low": 100, "high": 500, "step": 0}),
        "search_space.classifier.random_forest.n_estimators",
        "step must be a positive number (got 0)",
        id="step_zero",
    ),
    pytest.param(
        _set("classifier.random_forest.n_estimators", {"low": 100, "high": 500, "step": -50}),
        "search_space.classifier.random_forest.n_estimators",
        "step must be a positive number (got -50)",
        id="step_negative",
    ),
    pytest.param(
        _set("classifier.gradient_boosting.subsample", {"low": 0.5, "high": 1.0, "step": "0.1"}),
        "search_space.classifier.gradient_boosting.subsample",
        "step must be a positive number (got '0.1')",
        id="step_string",
    ),
    pytest.param(
        _set("classifier.logistic_regression.C", {"low": 1.0e-3, "high": 100.0, "log": "false"}),
        "search_space.classifier.logistic_regression.C",
        "log must be true or false (got 'false')",
        id="log_not_a_bool",
    ),
]


@pytest.mark.parametrize(("mutate", "path", "reason"), MORE_BAD_SPACES)
def test_more_bad_spaces(mutate: Callable, path: str, reason: str) -> None:
    """Malformed slots, steps and log flags are refused at parse time, naming the key."""
    raw = copy.deepcopy(DEFAULT)
    mutate(raw)
    with pytest.raises(UnitRefineError) as excinfo:
        parse_search_space(raw)
    assert str(excinfo.value).startswith(f"{path}: {reason}"), str(excinfo.value)


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------


def test_sampling_is_namespaced_in_range_and_reproducible() -> None:
    space = parse_search_space(DEFAULT)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: set[str] = set()
    for _ in range(60):
        trial = study.ask()
        spec = space.sample(trial)
        assert list(spec) == list(GROUPS)
        assert set(trial.params) == sampled_keys(DEFAULT, spec)
        for slot, choice in spec.items():
            assert trial.params[slot] == choice.name
            raw_params = DEFAULT[slot][choice.name] or {}
            assert set(choice.params) == set(raw_params)
            for p, value in choice.params.items():
                assert trial.params[f"{choice.name}.{p}"] == value
                assert_value_fits(raw_params[p], value, f"{choice.name}.{p}")
        assert space.spec_from_params(trial.params) == spec
        seen.add(spec["classifier"].name)
        study.tell(trial, 0.0)
    assert seen == set(CLASSIFIERS)  # 60 random trials reach every classifier: the draws really vary


FIXED_SPACE = {
    "imputer": {"median": {}},
    "scaler": {"standard": {}, "none": {}},
    "resampler": {"none": {}},
    "classifier": {
        "random_forest": {
            "n_estimators": 7,
            "max_features": None,
            "class_weight": "balanced_subsample",
            "max_depth": [3, 5],
            "min_samples_leaf": {"low": 1, "high": 4},
        },
        "logistic_regression": {"C": 0.5, "tol": {"low": 1.0e-5, "high": 1.0e-3, "log": True}},
    },
}


def test_fixed_values_are_in_the_spec_but_not_in_trial_params() -> None:
    space = parse_search_space(FIXED_SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        spec = space.sample(trial)
        clf = spec["classifier"]
        seen.add(clf.name)
        if clf.name == "random_forest":
            assert clf.params["n_estimators"] == 7 and clf.params["max_features"] is None
            assert clf.params["class_weight"] == "balanced_subsample"
            assert type(clf.params["min_samples_leaf"]) is int and 1 <= clf.params["min_samples_leaf"] <= 4
            assert set(trial.params) == {*GROUPS, "random_forest.max_depth", "random_forest.min_samples_leaf"}
        else:
            assert clf.params["C"] == 0.5 and 1.0e-5 <= clf.params["tol"] <= 1.0e-3
            assert set(trial.params) == {*GROUPS, "logistic_regression.tol"}
        assert space.spec_from_params(trial.params) == spec
    assert seen == {"random_forest", "logistic_regression"}
    # and the fixed trials (one per classifier) never carry fixed values either
    assert [t["classifier"] for t in space.fixed_trials()] == ["random_forest", "logistic_regression"]
    for params in space.fixed_trials():
        assert not {"random_forest.n_estimators", "random_forest.max_features", "logistic_regression.C"} & set(params)


@pytest.mark.parametrize("name", ["default", "fast"])
def test_fixed_trials_one_per_classifier_enqueued_and_reproduced(name: str) -> None:
    raw = load_raw(name)
    space = parse_search_space(raw)
    trials = space.fixed_trials()
    assert [t["classifier"] for t in trials] == list(raw["classifier"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for params in trials:
        study.enqueue_trial(params)
    for params in trials:
        for slot in ("imputer", "scaler", "resampler"):
            assert params[slot] == next(iter(raw[slot]))
        trial = study.ask()
        spec = space.sample(trial)
        assert trial.params == params
        assert spec == space.spec_from_params(params)
        assert set(params) == sampled_keys(raw, spec)
        for slot, choice in spec.items():
            for p, value in choice.params.items():
                assert_value_fits((raw[slot][choice.name] or {})[p], value, f"{choice.name}.{p}")
        study.tell(trial, 0.0)


def test_fixed_trials_take_middle_and_first_values() -> None:
    by_clf = {t["classifier"]: t for t in parse_search_space(DEFAULT).fixed_trials()}
    rf = by_clf["random_forest"]
    assert rf["random_forest.n_estimators"] == 300  # (100 + 500) / 2, on the step-50 grid
    assert rf["random_forest.max_depth"] is None  # first choice
    assert rf["random_forest.min_samples_leaf"] == 4  # geometric middle of [1, 20], rounded
    assert by_clf["logistic_regression"]["logistic_regression.C"] == pytest.approx(math.sqrt(1.0e-3 * 100.0))
    assert by_clf["mlp"]["mlp.n_layers"] == 2
    assert by_clf["gradient_boosting"]["gradient_boosting.subsample"] == pytest.approx(0.75)


# --------------------------------------------------------------------------------------------------
# Every shipped entry samples and fits
# --------------------------------------------------------------------------------------------------


def assert_params_applied(pipe: Any, spec: dict[str, Choice]) -> None:
    """Every spec parameter reached its step (the svc's through its wrapped SVC, the mlp's as a layer tuple)."""
    for slot, choice in spec.items():
        step = pipe.named_steps[slot]
        if choice.name == "none":
            assert step == "passthrough"
            continue
        got = step.get_params(deep=True)
        params = dict(choice.params)
        if choice.name == "mlp":
            sizes = (params.pop("n_units", 64),) * params.pop("n_layers", 1)
            assert got["hidden_layer_sizes"] == sizes
        for p, value in params.items():
            key = p if p in got else f"estimator__{p}"
            assert got[key] == value, f"{slot}.{choice.name}.{p}"


def check_fit(
    space: SearchSpace, spec: dict[str, Choice], X: pd.DataFrame, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    pipe = build_pipeline(spec, seed=0)
    assert_params_applied(pipe, spec)
    pipe.fit(X, y)
    proba = pipe.predict_proba(X)
    n_classes = len(np.unique(y))
    assert proba.shape == (len(X), n_classes)
    assert np.isfinite(proba).all() and (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    return pipe.predict(X), proba


def ids(entries: list[tuple[str, str]]) -> list[str]:
    return [f"{slot}-{choice}" for slot, choice in entries]


@pytest.mark.filterwarnings("ignore:n_quantiles")
@pytest.mark.parametrize(("slot", "choice"), ENTRIES, ids=ids(ENTRIES))
def test_every_entry_fits_at_middle_values(slot: str, choice: str, binary) -> None:
    X, y = binary
    space = parse_search_space(restricted(slot, choice))
    (params,) = space.fixed_trials()
    spec = space.spec_from_params(params)
    assert spec[slot].name == choice
    pred, _ = check_fit(space, spec, X, y)
    assert balanced_accuracy_score(y, pred) > 0.6


@pytest.mark.filterwarnings("ignore:n_quantiles")
@pytest.mark.parametrize(("slot", "choice"), ENTRIES, ids=ids(ENTRIES))
def test_every_entry_fits_at_sampled_values(slot: str, choice: str, binary) -> None:
    """A seeded random draw from the entry's ranges (away from the middle) also fits and ranks well."""
    X, y = binary
    space = parse_search_space(restricted(slot, choice))
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    spec = space.sample(trial)
    assert spec[slot].name == choice
    _, proba = check_fit(space, spec, X, y)
    assert roc_auc_score(y, proba[:, 1]) > 0.7


THREE_CLASS = [pytest.param(c, id=c) for c in CLASSIFIERS]


@pytest.mark.parametrize("choice", THREE_CLASS)
def test_every_classifier_fits_three_classes(choice: str, three_class) -> None:
    X, y = three_class
    space = parse_search_space(restricted("classifier", choice))
    (params,) = space.fixed_trials()
    pred, _ = check_fit(space, space.spec_from_params(params), X, y)
    assert set(np.unique(pred)) == {0, 1, 2}  # every class is predicted for some unit
    assert balanced_accuracy_score(y, pred) > 0.6


def test_partial_spec_is_the_pipeline_of_complete_parameters_and_empty_for_a_half_drawn_trial() -> None:
    space = parse_search_space(load_raw("fast"))
    params = space.fixed_trials()[-1]  # random_forest at its middle settings
    assert space.partial_spec(params) == space.spec_from_params(params)
    assert space.partial_spec(params)["classifier"].name == "random_forest"
    # Stopped after the classifier was chosen, before its parameters were drawn.
    half = {k: v for k, v in params.items() if not k.startswith("random_forest.")}
    assert space.partial_spec(half) == {}
