"""Ranges, choices, what a dataset's mode requires and removed keys (unitrefine.config_values), called directly."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from omegaconf import OmegaConf

from unitrefine.config import compose_config
from unitrefine.config_schema import DatasetConfig, RecordingConfig, TrainConfig
from unitrefine.config_values import (
    REMOVED_KEYS,
    check_values,
    drop_excluded_recordings,
    forget_removed_keys,
    removed_key_problems,
    storage_kind,
)
from unitrefine.errors import UnitRefineError

#: The components ``search.unit_limits`` may name here (check_values takes them; the real ones need sklearn).
COMPONENTS = {"svc", "knn", "gradient_boosting", "random_forest", "extra_trees", "mlp"}

STORAGE_HELP = ("is not supported. Use 'memory', a file path ending in '.journal' (one host), "
                "'sqlite:///path/study.db' or 'postgresql://user:password@host:5432/database' (several hosts).")


@pytest.fixture(scope="module")
def composed() -> TrainConfig:
    """conf/train.yaml as typed dataclasses (without check_values: the tests call it)."""
    obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), compose_config([])))
    assert isinstance(obj, TrainConfig)
    return obj


@pytest.fixture
def cfg(composed: TrainConfig) -> TrainConfig:
    return copy.deepcopy(composed)


def problems_of(cfg: TrainConfig) -> list[str]:
    """The listed problems of check_values (none: it passed)."""
    try:
        check_values(cfg, COMPONENTS)
    except UnitRefineError as exc:
        head, *lines = str(exc).split("\n  - ")
        assert head == "Invalid configuration:"
        return lines
    return []


def set_key(cfg: TrainConfig, key: str, value: Any) -> None:
    """Set the dotted ``key`` of the dataclasses, e.g. ``cv.n_splits``."""
    *parents, name = key.split(".")
    node: Any = cfg
    for part in parents:
        node = getattr(node, part)
    setattr(node, name, value)


# ----------------------------------------------------------------------------- check_values
def test_the_shipped_defaults_pass(cfg: TrainConfig) -> None:
    assert problems_of(cfg) == []
    assert set(cfg.search.unit_limits) == COMPONENTS  # else COMPONENTS above no longer matches conf/train.yaml


def test_every_search_problem_is_reported_together_in_order(cfg: TrainConfig) -> None:
    s = cfg.search
    s.n_trials, s.n_jobs, s.timeout_s, s.pruner, s.resume = 0, 0, 0, "mediam", "yes"
    s.heartbeat_s, s.grace_period_s, s.max_retries, s.warm_start_trials = 0, 0, -1, 0
    s.unit_limits = {"svm": 5000, "svc": 99, "knn": None}
    s.storage = "study.db"
    assert problems_of(cfg) == [
        "search.n_trials must be >= 1 (got 0)",
        "search.n_jobs must be >= 1 (got 0)",
        "search.timeout_s must be > 0 or null (got 0)",
        "search.pruner must be one of: median, hyperband, wilcoxon, none (got 'mediam'; did you mean median?)",
        "search.resume must be one of: true, false, strict (got 'yes')",
        "search.heartbeat_s must be >= 1 and search.grace_period_s larger than it (got 0 and 0)",
        "search.max_retries must be >= 0 (got -1)",
        "search.warm_start_trials must be >= 1 (got 0)",
        "search.unit_limits.svm: 'svm' is not a component; choose from ['extra_trees', 'gradient_boosting', 'knn', "
        "'mlp', 'random_forest', 'svc']",
        "search.unit_limits.svc must be null (no limit) or at least 100 units (got 99)",
        f"search.storage='study.db' {STORAGE_HELP}",
    ]


def test_every_other_range_and_choice_problem_is_reported_together(cfg: TrainConfig) -> None:
    cfg.threshold.objective, cfg.calibration.method, cfg.registry.bootstrap_by = "precison", "platt", "units"
    cfg.cv.group_by, cfg.ensemble.max_members, cfg.ensemble.rounds = "animal", 0, -1
    cfg.threshold.target_precision, cfg.registry.n_bootstrap = 0.0, 99
    cfg.cv.estimate_max_refits, cfg.cv.n_splits = 1, 1
    assert problems_of(cfg) == [
        "threshold.objective must be one of: balanced_accuracy, precision (got 'precison'; did you mean precision?)",
        "calibration.method must be one of: sigmoid, isotonic, null (got 'platt')",
        "registry.bootstrap_by must be one of: recording, unit (got 'units'; did you mean unit?)",
        "cv.group_by must be one of: recording, subject, null (got 'animal')",
        "ensemble.max_members must be null (no bound) or >= 1 (got 0)",
        "ensemble.rounds must be >= 0 and ensemble.candidates >= 1",
        "threshold.target_precision must be in (0, 1] (got 0.0)",
        "registry.n_bootstrap must be >= 100 (got 99)",
        "cv.estimate_max_refits must be >= 2 (got 1)",
        "cv.n_splits must be >= 2 (got 1)",
    ]


def test_task_and_mode_requirements_are_reported_together(cfg: TrainConfig) -> None:
    cfg.threshold.tune, cfg.calibration.method = True, "sigmoid"
    cfg.task.classes, cfg.task.mapping = ["a", "b", "a"], {"x": "c", "y": None, "z": "a"}
    cfg.dataset.recordings = []
    assert problems_of(cfg) == [
        "threshold.tune needs a binary task; 'sua_vs_all' has 3 classes",
        "calibration.method and threshold.tune cannot be combined: choose one",
        "dataset.recordings is empty: list at least one recording (id, metrics, labels)",
        "task.classes must list at least two distinct classes (got ['a', 'b', 'a'])",
        "task.mapping maps to ['c'], which are not in task.classes ['a', 'b', 'a']",
    ]


@pytest.mark.parametrize(
    ("key", "bad", "message", "good"),
    [
        ("search.n_trials", 0, "search.n_trials must be >= 1 (got 0)", 1),
        ("search.timeout_s", -1.0, "search.timeout_s must be > 0 or null (got -1.0)", 0.5),
        ("search.grace_period_s", 10, "search.heartbeat_s must be >= 1 and search.grace_period_s larger than it "
                                      "(got 10 and 10)", 11),
        ("search.max_retries", -1, "search.max_retries must be >= 0 (got -1)", 0),
        ("ensemble.max_members", 0, "ensemble.max_members must be null (no bound) or >= 1 (got 0)", 1),
        ("ensemble.candidates", 0, "ensemble.rounds must be >= 0 and ensemble.candidates >= 1", 1),
        ("threshold.target_precision", 1.01, "threshold.target_precision must be in (0, 1] (got 1.01)", 1.0),
        ("registry.n_bootstrap", 99, "registry.n_bootstrap must be >= 100 (got 99)", 100),
        ("cv.n_splits", 1, "cv.n_splits must be >= 2 (got 1)", 2),
        ("cv.estimate_max_refits", 1, "cv.estimate_max_refits must be >= 2 (got 1)", 2),
        ("search.unit_limits", {"svc": 99}, "search.unit_limits.svc must be null (no limit) or at least 100 units "
                                            "(got 99)", {"svc": 100}),
    ],
)
def test_each_bound_rejects_just_past_it_and_accepts_it(cfg: TrainConfig, key: str, bad: Any, message: str,
                                                        good: Any) -> None:
    set_key(cfg, key, bad)
    assert problems_of(cfg) == [message]
    set_key(cfg, key, good)
    assert problems_of(cfg) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [("calibration.method", None), ("calibration.method", "isotonic"), ("cv.group_by", None),
     ("cv.group_by", "subject"), ("search.resume", False), ("search.resume", "strict"), ("search.pruner", "none"),
     ("registry.bootstrap_by", "unit"), ("threshold.objective", "precision"), ("search.timeout_s", None),
     ("ensemble.max_members", None)],
)
def test_every_documented_choice_is_accepted(cfg: TrainConfig, key: str, value: Any) -> None:
    set_key(cfg, key, value)
    assert problems_of(cfg) == []


@pytest.mark.parametrize(("value", "shown"), [
    (1, "got '1'"), (0, "got '0'"),
    ("true", "got the text 'true'; write true without quotes)"),
    ("False", "got the text 'False'; write false without quotes)"),
])
def test_search_resume_takes_booleans_not_look_alikes(cfg: TrainConfig, value: Any, shown: str) -> None:
    cfg.search.resume = value  # resume is free-form (Any) in the schema: OmegaConf converts nothing
    (problem,) = problems_of(cfg)
    assert problem.startswith(f"search.resume must be one of: true, false, strict ({shown}")


# ----------------------------------------------------------------------------- what a dataset's mode requires
def test_csv_mode_needs_a_metrics_table_for_every_recording(cfg: TrainConfig) -> None:
    cfg.dataset.recordings = [RecordingConfig(id="r1", metrics="a.csv"), RecordingConfig(id="r2", analyzer="r2"),
                              RecordingConfig(id="r3")]
    assert problems_of(cfg) == ["dataset.mode is 'csv' but recordings ['r2', 'r3'] have no 'metrics' path"]


def test_analyzer_mode_needs_an_analyzer_labels_and_jobs_and_the_evaluation_dataset_is_checked_too(
    cfg: TrainConfig,
) -> None:
    cfg.dataset.mode = "analyzers"
    cfg.dataset.recordings = [RecordingConfig(id="r1", analyzer="a"), RecordingConfig(id="r2", metrics="m.csv",
                                                                                       labels="l.tsv")]
    cfg.dataset.compute.n_jobs = 0
    cfg.registry.evaluation_dataset = DatasetConfig(name="e", mode="tsv")
    assert problems_of(cfg) == [
        "dataset.mode is 'analyzers' but recordings ['r2'] have no 'analyzer' path",
        "recordings ['r1'] of dataset have no labels: give each a 'labels' file, or set dataset.label_property to a "
        "sorting property holding the labels (e.g. quality)",
        "dataset.compute.n_jobs must be >= 1 (got 0)",
        "registry.evaluation_dataset.mode must be one of: csv, analyzers (got 'tsv'; did you mean csv?)",
    ]
    cfg.dataset.label_property, cfg.dataset.compute.n_jobs = "quality", 1
    cfg.dataset.recordings[1].analyzer = "b"
    cfg.registry.evaluation_dataset = DatasetConfig(name="e", recordings=[RecordingConfig(id="e1")])
    assert problems_of(cfg) == ["registry.evaluation_dataset.mode is 'csv' but recordings ['e1'] have no 'metrics' "
                                "path"]


# ----------------------------------------------------------------------------- search.storage
@pytest.mark.parametrize(
    ("spec", "kind"),
    [("memory", "memory"), ("runs/study.journal", "journal"), ("sqlite:///x.db", "rdb"),
     ("postgresql://u:p@h:5432/d", "rdb"), ("postgresql+psycopg://u@h/d", "rdb")],
)
def test_storage_kind_of_each_supported_form(spec: str, kind: str) -> None:
    assert storage_kind(spec) == kind


@pytest.mark.parametrize("spec", ["mysql://h/d", "study.db", "sqlite:x.db", "journal", ""])
def test_an_unsupported_storage_names_the_value_and_the_supported_forms(spec: str) -> None:
    with pytest.raises(UnitRefineError, match=f"^{re.escape(f'search.storage={spec!r} {STORAGE_HELP}')}$"):
        storage_kind(spec)


# ----------------------------------------------------------------------------- removed keys
def test_removed_key_problems_finds_a_removed_key_only_where_it_was() -> None:
    advice = REMOVED_KEYS["task.positive_class"]
    assert removed_key_problems({"task": {"name": "t", "positive_class": "good"}}) == [
        ("task.positive_class", f"it no longer exists: {advice}")]
    assert removed_key_problems({"task": {"name": "t"}}) == []
    assert removed_key_problems({"task": "sua_vs_all"}) == []  # not a mapping: the schema check names it
    assert removed_key_problems({"positive_class": "good"}) == []  # at the top level it is another (unknown) key
    assert removed_key_problems({}) == []
    assert advice.startswith("a binary task's positive class is the second of task.classes")


def test_forget_removed_keys_deletes_only_the_removed_keys() -> None:
    raw = OmegaConf.create({"task": {"name": "t", "positive_class": "good"}, "positive_class": 1})
    assert forget_removed_keys(raw) == ["task.positive_class"]
    assert OmegaConf.to_container(raw) == {"task": {"name": "t"}, "positive_class": 1}
    flat = OmegaConf.create({"task": "t"})
    assert forget_removed_keys(flat) == [] and OmegaConf.to_container(flat) == {"task": "t"}


# ----------------------------------------------------------------------------- dataset.exclude_recordings
def with_recordings(cfg: TrainConfig, ids: list[str], held_out: list[str]) -> TrainConfig:
    cfg.dataset.recordings = [RecordingConfig(id=i, metrics=f"{i}.csv") for i in ids]
    cfg.cv.holdout_recordings = held_out
    return cfg


def test_excluded_recordings_are_dropped_in_order_and_nothing_else(cfg: TrainConfig) -> None:
    with_recordings(cfg, ["a", "b", "c", "d"], ["d"])
    drop_excluded_recordings(cfg)  # nothing excluded: unchanged
    assert [r.id for r in cfg.dataset.recordings] == ["a", "b", "c", "d"]
    cfg.dataset.exclude_recordings = ["c", "a"]
    drop_excluded_recordings(cfg)
    assert [(r.id, r.metrics) for r in cfg.dataset.recordings] == [("b", "b.csv"), ("d", "d.csv")]


def test_every_exclusion_problem_is_reported_together_and_the_recordings_are_kept(cfg: TrainConfig) -> None:
    with_recordings(cfg, ["a", "b"], ["b"])
    cfg.dataset.exclude_recordings = ["a", "b", "z"]
    with pytest.raises(UnitRefineError) as info:
        drop_excluded_recordings(cfg)
    assert str(info.value) == (
        "Invalid configuration:\n"
        "  - dataset.exclude_recordings names ['z'], which are not recordings of the dataset ['a', 'b']\n"
        "  - ['b'] are both excluded from the dataset and held out (cv.holdout_recordings): choose other held-out "
        "recordings\n"
        "  - dataset.exclude_recordings excludes every recording of the dataset"
    )
    assert [r.id for r in cfg.dataset.recordings] == ["a", "b"]  # raised before changing anything


def test_excluding_every_recording_alone_is_refused(cfg: TrainConfig) -> None:
    with_recordings(cfg, ["a", "b"], [])
    cfg.dataset.exclude_recordings = ["b", "a"]
    with pytest.raises(UnitRefineError, match=r"^Invalid configuration:\n  - dataset\.exclude_recordings excludes "
                                              r"every recording of the dataset$"):
        drop_excluded_recordings(cfg)
    assert [r.id for r in cfg.dataset.recordings] == ["a", "b"]
