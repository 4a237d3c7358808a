"""Python API in the shape of SpikeInterface's ``train_model``, running the same engine as the command line.

Both of SpikeInterface's modes: ``mode="csv"`` (metrics CSVs + labels) and ``mode="analyzers"``
(SortingAnalyzer objects + one list of labels per analyzer). Arguments are checked before any work.
"""

from __future__ import annotations

import difflib
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from unitrefine.config import compose_config, validate_config
from unitrefine.data.analyzer_data import GivenAnalyzer, given_analyzers, stored_compute
from unitrefine.data.tables import read_table, split_unit_ids
from unitrefine.errors import UnitRefineError
from unitrefine.run.training import TrainResult, train

MODES = ("csv", "analyzers")
#: SpikeInterface's ``search_kwargs`` -> our settings.
SEARCH_KWARGS = {"n_iter": "search.n_trials", "cv": "cv.n_splits", "scoring": "cv.scoring"}

#: SpikeInterface's names -> ours, so code written for ``spikeinterface.curation.train_model`` runs unchanged.
SI_NAMES = {
    "classifier": {
        "RandomForestClassifier": "random_forest",
        "ExtraTreesClassifier": "extra_trees",
        "GradientBoostingClassifier": "gradient_boosting",
        "HistGradientBoostingClassifier": "hist_gradient_boosting",
        "LogisticRegression": "logistic_regression",
        "MLPClassifier": "mlp",
        "XGBClassifier": "xgboost",
        "SVC": "svc",
    },
    "scaler": {"standard_scaler": "standard", "min_max_scaler": "min_max", "robust_scaler": "robust"},
    "imputer": {},
}


def _restrict(space: dict[str, Any], slot: str, names: Sequence[str] | None) -> None:
    if names is None:
        return
    wanted = [SI_NAMES[slot].get(n, n) for n in names]
    unknown = [n for n, w in zip(names, wanted) if w not in space[slot]]
    if unknown:
        raise UnitRefineError(
            f"Unknown {slot} {unknown}; choose from {sorted(space[slot])} (or SpikeInterface's names)."
        )
    space[slot] = {w: space[slot][w] for w in wanted}


def _resolve_mode(mode: str | None, analyzers: Any, metrics_paths: Any) -> str:
    """``mode`` checked, or inferred from which of ``analyzers`` / ``metrics_paths`` is given."""
    if mode is None:
        if (analyzers is None) == (metrics_paths is None):
            raise UnitRefineError("Give either analyzers=[...] (mode='analyzers') or metrics_paths=[...] (mode='csv').")
        return "analyzers" if analyzers is not None else "csv"
    if mode not in MODES:
        near = difflib.get_close_matches(str(mode).lower(), MODES, n=1, cutoff=0.5)
        hint = f" Did you mean '{near[0]}'?" if near else ""
        raise UnitRefineError(
            f"mode='{mode}' is not a train_model mode; use 'analyzers' (with analyzers=[...]) or 'csv' "
            f"(with metrics_paths=[...]).{hint}"
        )
    needed, other = ("analyzers", "metrics_paths") if mode == "analyzers" else ("metrics_paths", "analyzers")
    if (analyzers if mode == "analyzers" else metrics_paths) is None:
        raise UnitRefineError(f"mode='{mode}' needs {needed}=[...] (one per recording).")
    if (metrics_paths if mode == "analyzers" else analyzers) is not None:
        raise UnitRefineError(f"{other}= is for mode='{'csv' if mode == 'analyzers' else 'analyzers'}'; "
                              f"with mode='{mode}' give {needed}=[...] only.")
    return mode


def _label_text(value: Any) -> str | None:
    """A curation label as text; None for a missing one (None, NaN, empty)."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    return str(value).strip() or None


def _given(analyzers: Any, labels: Any) -> dict[str, GivenAnalyzer]:
    """Check SpikeInterface-style ``analyzers`` and ``labels``; ``analyzers[i]`` -> the analyzer and its labels."""
    from spikeinterface.core import SortingAnalyzer

    if isinstance(analyzers, SortingAnalyzer) or not isinstance(analyzers, Sequence) or not analyzers:
        raise UnitRefineError("analyzers must be a non-empty list of SortingAnalyzer objects, one per recording.")
    for i, analyzer in enumerate(analyzers):
        if not isinstance(analyzer, SortingAnalyzer):
            hint = " Load it with spikeinterface.core.load_sorting_analyzer(folder)." if isinstance(
                analyzer, (str, Path)) else ""
            raise UnitRefineError(f"analyzers[{i}] is a {type(analyzer).__name__}, not a SortingAnalyzer.{hint}")
    if labels is None:
        raise UnitRefineError("mode='analyzers' needs labels=[[...], ...]: one list of labels per analyzer.")
    if isinstance(labels, (str, Path)) or len(labels) != len(analyzers):
        count = "a single value" if isinstance(labels, (str, Path)) else f"{len(labels)} entries"
        raise UnitRefineError(f"labels has {count} but there are {len(analyzers)} analyzers; give one list of "
                              "labels per analyzer (labels=[[...], [...], ...]).")
    out = {}
    for i, (analyzer, values) in enumerate(zip(analyzers, labels)):
        if isinstance(values, (str, Path, Mapping)) or not hasattr(values, "__len__"):
            raise UnitRefineError(f"labels[{i}] is a {type(values).__name__}; give a list of labels, one per unit of "
                                  f"analyzers[{i}], in the order of its unit_ids.")
        if len(values) != analyzer.get_num_units():
            raise UnitRefineError(
                f"labels[{i}] has {len(values)} labels but analyzers[{i}] has {analyzer.get_num_units()} units; give "
                f"one label per unit, in the order of analyzers[{i}].unit_ids (None for a unit left out)."
            )
        series = pd.Series([_label_text(v) for v in values], index=[str(u) for u in analyzer.unit_ids], dtype=object)
        out[f"analyzers[{i}]"] = GivenAnalyzer(analyzer, series.dropna())
    return out


def _labels_file(labels: Any, metrics_path: Path, tmp: Path, i: int) -> str:
    """A labels file for recording ``i``: a path as given, or a list aligned with the metrics rows written out."""
    if isinstance(labels, (str, Path)):
        return str(labels)
    values = list(labels)
    ids, _ = split_unit_ids(read_table(metrics_path, "metrics"), metrics_path)
    if len(values) != len(ids):
        raise UnitRefineError(
            f"labels[{i}] has {len(values)} labels but {metrics_path} has {len(ids)} units; they must align row by row."
        )
    path = tmp / f"labels_{i}.csv"
    pd.DataFrame({"unit_id": ids, "label": [str(v).strip() for v in values]}).to_csv(path, index=False)
    return str(path)


def _csv_recordings(metrics_paths: Any, labels: Any, ids: list[str], tmp: Path) -> list[dict[str, str]]:
    recordings = []
    for i, (rid, mpath, lab) in enumerate(zip(ids, metrics_paths, labels)):
        mpath = Path(mpath).expanduser().resolve()
        recordings.append({"id": rid, "metrics": str(mpath), "labels": _labels_file(lab, mpath, tmp, i)})
    return recordings


def _label_values(mode: str, labels: Any, given: dict[str, GivenAnalyzer]) -> dict[int, set[str]]:
    """Index of each labels list -> the labels it holds (label files are read later)."""
    if mode == "analyzers":
        return {i: set(g.labels) for i, g in enumerate(given.values())}
    return {i: {str(v).strip() for v in lab} for i, lab in enumerate(labels) if not isinstance(lab, (str, Path))}


def _set_task(cfg: DictConfig, task: str | None, values: dict[int, set[str]], mode: str) -> None:
    """No task: learn the labels as given. A task: every label must be one it maps."""
    if task is None:
        found = sorted(set().union(*values.values()))
        if not found:
            raise UnitRefineError(
                "With label files, name the task (task='sua_vs_all', 'noise_vs_neural' or 'three_class')."
            )
        cfg.task = OmegaConf.create({"name": "as_labelled", "classes": found, "mapping": {c: c for c in found}})
        return
    known = {str(k).strip() for k in cfg.task.mapping}
    for i, held in values.items():
        bad = sorted(held - known)
        if bad:
            where = f"analyzers[{i}]" if mode == "analyzers" else f"metrics_paths[{i}]"
            near = [f"'{b}' -> '{m[0]}'" for b in bad if (m := difflib.get_close_matches(b, sorted(known), n=1))]
            raise UnitRefineError(
                f"labels[{i}] (for {where}) holds labels {bad} that task '{task}' does not know; it maps "
                f"{sorted(known)}{' (did you mean ' + ', '.join(near) + '?)' if near else ''}. Relabel those "
                "units, choose another task, or leave task=None to learn the labels as given."
            )


def _search_overrides(search_kwargs: Mapping[str, Any] | None) -> list[str]:
    """SpikeInterface's ``search_kwargs`` as overrides: n_iter -> search.n_trials, cv -> cv.n_splits, scoring."""
    kwargs = dict(search_kwargs or {})
    unknown = sorted(set(kwargs) - set(SEARCH_KWARGS))
    if unknown:
        raise UnitRefineError(f"search_kwargs {unknown} have no counterpart here; give {sorted(SEARCH_KWARGS)}, and "
                              "other settings as overrides=[...] (e.g. 'search.n_jobs=2').")
    for key in ("n_iter", "cv"):
        if key in kwargs and (isinstance(kwargs[key], bool) or not isinstance(kwargs[key], int)):
            raise UnitRefineError(f"search_kwargs['{key}'] must be a whole number (got {kwargs[key]!r}); folds are "
                                  "made here, grouped by recording.")
    return [f"{SEARCH_KWARGS[k]}={v}" for k, v in kwargs.items()]


def _configure(cfg: DictConfig, folder: str | Path | None, overwrite: bool, seed: int | None,
               choices: dict[str, Sequence[str] | None]) -> None:
    """Restrict the search space to the chosen components; set seed, output folder and overwrite."""
    space = OmegaConf.to_container(cfg.search_space)
    assert isinstance(space, dict)
    for slot, names in choices.items():
        _restrict(space, slot, names)
    cfg.search_space = OmegaConf.create(space)
    if seed is not None:
        cfg.seed = seed
    if folder is not None:
        cfg.output.folder = str(Path(folder).expanduser().resolve())
    cfg.output.overwrite = overwrite


# Over 60 lines: its numpydoc docstring; the code is 31 lines.
def train_model(
    mode: str | None = None,
    labels: Sequence[Any] | None = None,
    analyzers: Sequence[Any] | None = None,
    metrics_paths: Sequence[str | Path] | None = None,
    folder: str | Path | None = None,
    metric_names: list[str] | None = None,
    imputation_strategies: list[str] | None = None,
    scaling_techniques: list[str] | None = None,
    classifiers: list[str] | None = None,
    overwrite: bool = False,
    seed: int | None = None,
    search_kwargs: Mapping[str, Any] | None = None,
    enforce_metric_params: bool = False,
    task: str | None = None,
    recording_ids: list[str] | None = None,
    experiment_name: str = "train_model",
    overrides: Sequence[str] = (),
) -> TrainResult:
    """Train a curation model from SortingAnalyzers or metrics CSVs, like ``spikeinterface.curation.train_model``.

    Every argument is checked before any work; the search, tracking and export are those of
    ``python -m unitrefine.train``. Each analyzer (or metrics file) is one recording: CV folds group by it.

    Parameters
    ----------
    mode : {"analyzers", "csv"}, optional
        None: ``"analyzers"`` if ``analyzers`` is given, ``"csv"`` if ``metrics_paths`` is.
    labels : list
        One entry per analyzer or metrics file. Analyzers: a list of labels, one per unit in the order of
        ``analyzer.unit_ids`` (None leaves a unit out). CSV: such a list aligned with the file's rows, or a
        labels file (Phy ``cluster_group.tsv`` or CSV of unit id + label).
    analyzers : list of SortingAnalyzer
        ``mode="analyzers"``: the analyzers, in memory or on disk. Metrics some lack are computed on them
        (and saved, for analyzers on disk) with the parameters stored by the first analyzer holding them;
        with none holding any, SpikeInterface's default metrics are computed.
    metrics_paths : list of path
        ``mode="csv"``: metrics CSVs, one per recording (unit id in the first column).
    folder : path, optional
        Output model folder (default: ``experiments/<experiment_name>/models/<run>``).
    metric_names : list of str, optional
        Features to use; None uses every metric the analyzers hold (or every metric column).
    imputation_strategies, scaling_techniques, classifiers : list of str, optional
        Restrict the search to these choices (our names or SpikeInterface's); None searches all.
    overwrite : bool
        Replace an existing ``folder``.
    seed : int, optional
        Seed of the search and every estimator (default 42).
    search_kwargs : dict, optional
        SpikeInterface's search settings: ``n_iter`` (trials of the whole search), ``cv`` (folds) and ``scoring``
        (only ``"balanced_accuracy"``, see ``cv.scoring``).
    enforce_metric_params : bool
        Analyzers: refuse analyzers whose metrics were computed with different parameters, or hold
        different metrics (``dataset.strict``), instead of warning.
    task : str, optional
        A task config name (``sua_vs_all``, ``noise_vs_neural``, ``three_class``); None learns the labels as given.
    recording_ids : list of str, optional
        Names of the recordings (default: ``recording_0``, ...).
    experiment_name : str
        MLflow experiment and study name.
    overrides : list of str
        Further Hydra-style overrides, e.g. ``["search.n_trials=20", "tracking.enabled=false"]``.

    Returns
    -------
    TrainResult

    Raises
    ------
    UnitRefineError
        A bad argument (unknown mode, labels not matching the analyzers or their units, labels the task does
        not know, ...), before anything is computed or written.
    """
    mode = _resolve_mode(mode, analyzers, metrics_paths)
    given = _given(analyzers, labels) if mode == "analyzers" else {}
    sources: list[Any] = list((analyzers if mode == "analyzers" else metrics_paths) or [])
    if mode == "csv" and (labels is None or len(labels) != len(sources)):
        raise UnitRefineError("Give one labels entry per metrics file (labels=[...], metrics_paths=[...]).")
    ids = recording_ids or [f"recording_{i}" for i in range(len(sources))]
    if len(ids) != len(sources):
        what = "analyzers" if given else "metrics files"
        raise UnitRefineError(f"recording_ids must name every one of the {len(sources)} {what}.")
    # Like SpikeInterface's train_model, every call searches afresh (a new study beside earlier ones);
    # pass overrides=["search.resume=true"] to continue the latest study of the experiment instead.
    cfg = compose_config([f"experiment_name={experiment_name}", "search.resume=false",
                          *([f"task={task}"] if task else []), *_search_overrides(search_kwargs), *overrides])
    _set_task(cfg, task, _label_values(mode, labels, given), mode)
    _configure(cfg, folder, overwrite, seed,
               {"imputer": imputation_strategies, "scaler": scaling_techniques, "classifier": classifiers})
    with tempfile.TemporaryDirectory(prefix="unitrefine-labels-") as tmp, given_analyzers(given):
        if given:
            dataset = {"mode": "analyzers", "compute": stored_compute(sources), "strict": enforce_metric_params,
                       "recordings": [{"id": rid, "analyzer": key, "labels": key.replace("analyzers", "labels")}
                                      for rid, key in zip(ids, given)]}
        else:
            dataset = {"mode": "csv", "recordings": _csv_recordings(sources, labels, ids, Path(tmp))}
        cfg.dataset = OmegaConf.create({"name": experiment_name, "metric_names": metric_names, **dataset})
        result = train(validate_config(cfg))
    if result is None:
        raise UnitRefineError(
            f"Study '{experiment_name}' was already complete and exported, or another worker exports it: nothing "
            "was trained. Leave search.resume=false (the default here) to train afresh."
        )
    return result
