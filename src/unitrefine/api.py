"""Python API in the shape of SpikeInterface's ``train_model``, running the same engine as the command line."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from unitrefine.config import compose_config, validate_config
from unitrefine.data import read_table, split_unit_ids
from unitrefine.errors import UnitRefineError
from unitrefine.training import TrainResult, train

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
        raise UnitRefineError(f"Unknown {slot} {unknown}; choose from {sorted(space[slot])} (or SpikeInterface's names).")
    space[slot] = {w: space[slot][w] for w in wanted}


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


def train_model(
    mode: str = "csv",
    labels: Sequence[Any] | None = None,
    metrics_paths: Sequence[str | Path] | None = None,
    folder: str | Path | None = None,
    metric_names: list[str] | None = None,
    imputation_strategies: list[str] | None = None,
    scaling_techniques: list[str] | None = None,
    classifiers: list[str] | None = None,
    overwrite: bool = False,
    seed: int | None = None,
    task: str | None = None,
    recording_ids: list[str] | None = None,
    experiment_name: str = "train_model",
    overrides: Sequence[str] = (),
) -> TrainResult:
    """Train a curation model from metrics CSVs and labels, like ``spikeinterface.curation.train_model``.

    Parameters
    ----------
    mode : {"csv"}
        Only CSV mode is available here.
    labels : list
        One entry per metrics file: a labels file (Phy ``cluster_group.tsv`` or CSV of unit id + label),
        or a list of labels aligned with that file's rows.
    metrics_paths : list of path
        Metrics CSVs, one per recording (unit id in the first column).
    folder : path, optional
        Output model folder (default: ``experiments/<experiment_name>/models/<run>``).
    metric_names : list of str, optional
        Features to use; None uses every metric column.
    imputation_strategies, scaling_techniques, classifiers : list of str, optional
        Restrict the search to these choices (our names or SpikeInterface's); None searches all.
    overwrite : bool
        Replace an existing ``folder``.
    seed : int, optional
        Seed of the search and every estimator (default 42).
    task : str, optional
        A task config name (``sua_vs_all``, ``noise_vs_neural``, ``three_class``); None learns the labels as given.
    recording_ids : list of str, optional
        Names of the recordings (default: ``recording_0``, ...); CV is grouped by recording.
    experiment_name : str
        MLflow experiment and study name.
    overrides : list of str
        Further Hydra-style overrides, e.g. ``["search.n_trials=20", "tracking.enabled=false"]``.

    Returns
    -------
    TrainResult
    """
    if mode != "csv":
        raise UnitRefineError(f"mode='{mode}' is not supported; export the metrics to CSV and use mode='csv'.")
    if not metrics_paths or labels is None or len(labels) != len(metrics_paths):
        raise UnitRefineError("Give one labels entry per metrics file (labels=[...], metrics_paths=[...]).")
    ids = recording_ids or [f"recording_{i}" for i in range(len(metrics_paths))]
    if len(ids) != len(metrics_paths):
        raise UnitRefineError("recording_ids must name every metrics file.")
    # Like SpikeInterface's train_model, every call searches afresh (a new study beside earlier ones);
    # pass overrides=["search.resume=true"] to continue the latest study of the experiment instead.
    cfg = compose_config(
        [f"experiment_name={experiment_name}", "search.resume=false", *([f"task={task}"] if task else []), *overrides]
    )
    with tempfile.TemporaryDirectory(prefix="unitrefine-labels-") as tmp:
        recordings = []
        for i, (rid, mpath, lab) in enumerate(zip(ids, metrics_paths, labels)):
            mpath = Path(mpath).expanduser().resolve()
            recordings.append({"id": rid, "metrics": str(mpath), "labels": _labels_file(lab, mpath, Path(tmp), i)})
        cfg.dataset = OmegaConf.create(
            {"name": experiment_name, "mode": "csv", "recordings": recordings, "metric_names": metric_names}
        )
        if task is None:
            found = sorted({str(v).strip() for lab in labels if not isinstance(lab, (str, Path)) for v in lab})
            if not found:
                raise UnitRefineError("With label files, name the task (task='sua_vs_all', 'noise_vs_neural' or 'three_class').")
            cfg.task = OmegaConf.create({"name": "as_labelled", "classes": found, "mapping": {c: c for c in found}})
        space = OmegaConf.to_container(cfg.search_space)
        assert isinstance(space, dict)
        _restrict(space, "imputer", imputation_strategies)
        _restrict(space, "scaler", scaling_techniques)
        _restrict(space, "classifier", classifiers)
        cfg.search_space = OmegaConf.create(space)
        if seed is not None:
            cfg.seed = seed
        if folder is not None:
            cfg.output.folder = str(Path(folder).expanduser().resolve())
        cfg.output.overwrite = overwrite
        result = train(validate_config(cfg))
    if result is None:
        raise UnitRefineError(
            f"Study '{experiment_name}' was already complete and exported, or another worker exports it: nothing "
            "was trained. Leave search.resume=false (the default here) to train afresh."
        )
    return result
