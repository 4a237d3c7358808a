"""The options of the commands that are not training (``predict``, ``suggest``, ``merge_review``, ``recreate``), and
every command's ``--help``: its usage, main options (one line each) and examples.

An option's default is in the command's ``conf/<command>.yaml`` only: the dataclasses that type the options (e.g.
:class:`ApplyOptions`, the fields ``predict`` and ``suggest`` share) have none, and :func:`command_options` fills
the options a caller leaves out from that file.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from unitrefine.errors import UnitRefineError

#: How ``predict`` and ``suggest`` are told which model to apply to which units.
MODEL_AND_DATA = "model=<folder or models:/name@alias> data=<csv, folder of csvs, or analyzer folder>"

T = TypeVar("T")


@dataclass(kw_only=True)
class ApplyOptions:
    """The options ``predict`` and ``suggest`` share: the units a model is applied to, the output, how the model is
    loaded and how an analyzer's metrics are found (each command adds its own ``model`` and options).

    No field has a default: ``conf/predict.yaml`` and ``conf/suggest.yaml`` hold them.
    """

    data: str
    output: str
    overwrite: bool
    trust: list[str]
    impute_missing: list[str]
    tracking_uri: str | None
    compute_missing: bool
    save_metrics: bool
    strict: bool
    n_jobs: int


def command_options(
    cfg: DictConfig | dict[str, Any], schema: type, command: str, required: Sequence[str], usage: str
) -> dict[str, Any]:
    """The options given to ``python -m unitrefine.<command>``, checked against the fields of ``schema``.

    Options not given take their value in ``conf/<command>.yaml`` (what Hydra composes already has them all).

    Parameters
    ----------
    cfg : DictConfig or dict
        What Hydra composed (its own ``hydra`` key is dropped), or the options given by a caller.
    schema : dataclass type
        The command's options.
    command : str
        The command's name, for the messages and its YAML file.
    required : sequence of str
        Options that must be set.
    usage : str
        The command's arguments, shown when a required option is missing.

    Returns
    -------
    dict
        Every option of the command; values in the forms given (the command reads lists, models, budgets).

    Raises
    ------
    UnitRefineError
        An unknown option (with the closest known one), a required option not set, or an option declared as a
        number or a flag given another value (e.g. ``n_jobs=abc``, ``overwrite=perhaps``).
    """
    raw = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    known = sorted(schema.__dataclass_fields__)
    unknown = sorted(set(raw) - set(known))
    if unknown:
        hints = [f"{k} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(k, known, n=1)) else k
                 for k in unknown]
        raise UnitRefineError(f"Unknown {command} option(s): {', '.join(hints)}. The options are {known} "
                              f"(python -m unitrefine.{command} --help describes them).")
    raw.update({k: v for k, v in _yaml_options(command).items() if k not in raw})  # given first: their order
    missing = [k for k in required if raw.get(k) in (None, "", "???")]
    if missing:
        raise UnitRefineError(f"Set {', '.join(f'{k}=...' for k in missing)}: python -m unitrefine.{command} {usage}")
    problems = _scalar_problems(raw, schema)
    if problems:
        raise UnitRefineError(_invalid(command, problems))
    return raw


def typed_options(raw: dict[str, Any], schema: type[T], command: str) -> T:
    """The options, once a command has put them in their final form, as ``schema``: each value checked against its
    field's type (OmegaConf's structured config) and converted (``"true"`` -> ``True``, ``"2"`` -> ``2``).

    Raises
    ------
    UnitRefineError
        Every option whose value does not fit its type, in the words of :func:`command_options`.
    """
    from unitrefine.config_check import schema_problems

    problems = schema_problems(raw, schema)
    try:
        if not problems:
            options = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), raw))
            assert isinstance(options, schema)
            return options
    except OmegaConfBaseException as exc:  # what the schema walk does not see
        problems = [(str(getattr(exc, "full_key", None) or "(options)"), str(exc).splitlines()[0])]
    raise UnitRefineError(_invalid(command, problems))


def _invalid(command: str, problems: list[tuple[str, str]]) -> str:
    lines = [f"{key}: {problem}" for key, problem in problems]
    return f"Invalid {command} option(s): {'; '.join(lines)}. See python -m unitrefine.{command} --help."


def _yaml_options(command: str) -> dict[str, Any]:
    """The options ``conf/<command>.yaml`` sets (required ones as ``???``), without Hydra's keys."""
    from unitrefine.config import CONF_DIR

    options = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{command}.yaml"))
    assert isinstance(options, dict)
    return {k: v for k, v in options.items() if k not in ("defaults", "hydra")}


def _scalar_problems(raw: dict[str, Any], schema: type) -> list[tuple[str, str]]:
    """Options declared as a number or a flag (possibly null) that were given something else.

    Options of other types (text, lists, mappings, ``Any``) are left to the command, which may accept several
    forms (``suggest`` explains why ``model=[a,b]`` is not for it).
    """
    import typing

    from unitrefine.config_check import schema_problems, unwrap_optional

    hints = typing.get_type_hints(schema)
    return [problem for key, value in raw.items() if value != "???" and unwrap_optional(hints[key])[0] in
            (int, float, bool) for problem in schema_problems(value, hints[key], key)]


@dataclass(frozen=True)
class CommandHelp:
    """What ``python -m unitrefine.<command> --help`` prints.

    ``{experiments}``, ``{tasks}``, ``{datasets}`` and ``{search_spaces}`` in an option's description are
    replaced by the config files of that group (``conf/<group>/*.yaml``).
    """

    summary: str
    usage: str
    options: tuple[tuple[str, str], ...]
    examples: tuple[str, ...]
    notes: tuple[str, ...] = ()


_TRAIN_NOTES = (
    "Keys are dotted paths (search.n_trials); lists are written [a,b]; +key=value adds a key no YAML file sets, "
    "~key removes one.",
    "Every setting and its default: conf/train.yaml. The composed configuration, without running: add --cfg job. "
    "Hydra's own flags: --hydra-help.",
)

#: The ``--help`` of every command; the option descriptions are the ones the commands' docs refer to.
#: The help lines of the options predict and suggest share (:class:`ApplyOptions`).
_APPLY_HELP = (
            ("compute_missing=<bool>", "analyzers: compute the metrics the model needs and the analyzer lacks"),
            ("save_metrics=<bool>", "analyzers: save those metrics on the analyzer"),
            ("strict=<bool>", "analyzers: metrics computed with other parameters than the model's are an error"),
            ("impute_missing=[a,b]", "metrics the input may lack (imputed by the model)"),
            ("trust=[types]", "skops types to trust beyond the reviewed list (review them first)"),
            ("tracking_uri=<uri>", "the registry of models:/ URIs (null: <project>/mlruns/mlflow.db)"),
)
#: Where a command's relative paths are taken from (:mod:`unitrefine.apply.command_paths`).
_PATHS = ("Relative inputs: from the current directory, else from the project; output= from the current "
          "directory.")

HELP: dict[str, CommandHelp] = {
    "train": CommandHelp(
        "Search for the best curation classifier (Optuna), check it on held-out recordings, export it and track "
        "everything in MLflow.",
        "python -m unitrefine.train +experiment=<name> [key=value ...]",
        (
            ("+experiment=<name>", "the experiment to run (conf/experiment/<name>.yaml): {experiments}"),
            ("task=<name>", "the classification task: {tasks}"),
            ("dataset=<name>", "the dataset (conf/dataset/<name>.yaml): {datasets}"),
            ("search_space=<name>", "the classifiers and their ranges: {search_spaces}"),
            ("experiment_name=<name>", "the MLflow experiment and Optuna study name"),
            ("seed=<int>", "seed of the search, the CV splits and the models"),
            ("search.n_trials=<int>", "the study-wide trial budget"),
            ("search.n_jobs=<int>", "trials run side by side (one thread each)"),
            ("search.timeout_s=<seconds>", "wall-clock limit of the search (null: none)"),
            ("search.resume=<bool>", "continue this experiment's latest study (false: start a fresh one)"),
            ("search.warm_start=<model>", "first try the best configurations of a model folder or models:/name@alias"),
            ("cv.holdout_recordings=[a,b]", "recordings kept out of the search to evaluate the model"),
            ("ensemble.rounds=<int>", "> 0: export a soft-voting ensemble of the best trials if it beats the best"),
            ("tracking.enabled=<bool>", "log to MLflow (false: no tracking)"),
            ("tracking.uri=<uri>", "the MLflow store (null: sqlite:///<project>/mlruns/mlflow.db)"),
            ("output.folder=<path>", "where the model folder goes (null: experiments/<name>/models/<run>)"),
            ("root=<path>", "folder the config's relative paths are resolved against (null: the project)"),
        ),
        (
            "python -m unitrefine.train +experiment=smoke",
            "python -m unitrefine.train +experiment=mouse_v1 search.n_trials=100 search.timeout_s=1800 seed=7",
            "python -m unitrefine.train +experiment=mouse_v1 task=noise_vs_neural experiment_name=mouse_noise",
        ),
        _TRAIN_NOTES,
    ),
    "promote": CommandHelp(
        "Score the registered challenger and champion on the same labelled units; move the champion alias to the "
        "challenger when it wins by more than registry.margin.",
        "python -m unitrefine.promote +experiment=<name> [force=true] [key=value ...]",
        (
            ("+experiment=<name>", "the experiment whose registered model is compared: {experiments}"),
            ("force=<bool>", "promote the challenger whatever the comparison says"),
            ("registry.margin=<x>", "balanced accuracy the challenger must win by"),
            ("registry.n_bootstrap=<int>", "resamples for the confidence interval of the difference"),
            ("registry.bootstrap_by=<x>", "resample recording or unit"),
            ("registry.evaluation_dataset=<dataset>", "compare on this dataset (null: the held-out recordings)"),
            ("tracking.uri=<uri>", "the MLflow store holding the registry"),
            ("tracking.model_name=<name>", "the registered model (null: the experiment name)"),
        ),
        (
            "python -m unitrefine.promote +experiment=mouse_v1",
            "python -m unitrefine.promote +experiment=mouse_v1 registry.margin=0.01",
            "python -m unitrefine.promote +experiment=mouse_v1 force=true",
        ),
        _TRAIN_NOTES,
    ),
    "predict": CommandHelp(
        "Label units with a trained model (or a cascade of two); writes a predictions CSV.",
        f"python -m unitrefine.predict {MODEL_AND_DATA} output=<csv> [key=value ...]",
        (
            ("model=<model>", "a model folder, models:/<name>@<alias> or models:/<name>/<version>; "
                              "[noise_model,sua_model]: a cascade"),
            ("data=<path>", "a metrics CSV/TSV, a folder of them (one recording each), or a SortingAnalyzer folder"),
            ("output=<csv>", "the predictions CSV"),
            ("overwrite=<bool>", "replace existing outputs"),
            ("review=<budget>", "mark units for review: a fraction (0.1), a percentage (10%) or a count (50)"),
            ("phy_folder=<path>", "also write the labels (and review queue) as Phy cluster_*.tsv files there"),
            ("set_properties=<bool>", "analyzers: set the sorting properties classifier_label/_probability"),
            *_APPLY_HELP,
            ("noise_label=<class>", "cascade: the first model's class that marks noise"),
            ("n_jobs=<int>", "SpikeInterface jobs when computing metrics"),
        ),
        (
            "python -m unitrefine.predict model=experiments/mouse_v1/models/<run> data=new_data.csv output=preds.csv",
            "python -m unitrefine.predict model=models:/mouse_v1@champion data=path/to/analyzer output=preds.csv "
            "review=10%",
            "python -m unitrefine.predict model=[models:/noise@champion,models:/sua@champion] data=path/to/analyzer "
            "output=preds.csv",
        ),
        (f"{_PATHS} Defaults: conf/predict.yaml.",),
    ),
    "suggest": CommandHelp(
        "Rank the units a curator should label next: those the model is least sure about, spread across "
        "recordings.",
        f"python -m unitrefine.suggest {MODEL_AND_DATA} output=<csv> [n=<k>] [key=value ...]",
        (
            ("model=<model>", "a model folder, models:/<name>@<alias> or models:/<name>/<version>"),
            ("data=<path>", "unlabelled units: a metrics CSV/TSV, a folder of them, or a SortingAnalyzer folder"),
            ("output=<csv>", "the suggestions CSV"),
            ("n=<int>", "how many units to suggest"),
            ("strategy=<name>", "margin, least_confidence or entropy"),
            ("spread=<name>", "round_robin (each recording in turn) or none (one global order)"),
            ("labels=<path>", "units already labelled, never suggested: a labels file or folder, or a Phy folder"),
            ("overwrite=<bool>", "replace an existing output"),
            *_APPLY_HELP,
            ("n_jobs=<int>", "SpikeInterface jobs when computing metrics"),
        ),
        (
            "python -m unitrefine.suggest model=models:/mouse_v1@champion data=path/to/analyzer output=next.csv",
            "python -m unitrefine.suggest model=<folder> data=new_data.csv n=50 labels=labelled.csv output=next.csv",
        ),
        (f"{_PATHS} Defaults: conf/suggest.yaml.",),
    ),
    "merge_review": CommandHelp(
        "The final curated labels: the curator's where they reviewed a unit, the model's elsewhere.",
        "python -m unitrefine.merge_review predictions=<csv> review=<Phy folder | labels csv> output=<csv>",
        (
            ("predictions=<csv>", "the CSV unitrefine.predict wrote"),
            ("review=<path>", "the curator's labels: a Phy folder, a labels file, or a folder of them"),
            ("output=<csv>", "the curated labels CSV"),
            ("overwrite=<bool>", "replace an existing output (inputs are only read)"),
            ("mapping={label: class}", "curator labels that are not model classes, e.g. mapping={good:sua}"),
        ),
        (
            "python -m unitrefine.merge_review predictions=preds.csv review=path/to/phy output=curated.csv",
            "python -m unitrefine.merge_review predictions=preds.csv review=labels.csv output=curated.csv "
            "mapping={good:sua}",
        ),
        (f"{_PATHS} Defaults: conf/merge_review.yaml.",),
    ),
    "recreate": CommandHelp(
        "Re-train a recorded model from its recorded configuration and check it against the record. Exit status: "
        "0 identical, 3 differs, 4 data changed (nothing trained), 2 other errors.",
        "python -m unitrefine.recreate source=<model folder | MLflow run id | models:/name@alias> [key=value ...]",
        (
            ("source=<model>", "a model folder of unitrefine.train, an MLflow run id, or models:/<name>@<alias>"),
            ("output=<folder>", "keep the re-created model folder there (must not exist; null: a temporary one)"),
            ("tracking_uri=<uri>", "the MLflow store of a run id or registered model"),
            ("tolerance=<x>", "scores and probabilities differing by at most this count as equal"),
        ),
        (
            "python -m unitrefine.recreate source=experiments/mouse_v1/models/<date>-<run>",
            "python -m unitrefine.recreate source=models:/mouse_v1@champion output=again",
        ),
        ("Defaults: conf/recreate.yaml.",),
    ),
}


def format_help(command: str, conf_dir: Path | None = None) -> str:
    """The text ``python -m unitrefine.<command> --help`` prints.

    Parameters
    ----------
    command : str
        A key of :data:`HELP`.
    conf_dir : Path, optional
        The config directory, to list the experiments, tasks, datasets and search spaces (default: the project's).

    Returns
    -------
    str
    """
    if conf_dir is None:
        from unitrefine.config import CONF_DIR

        conf_dir = CONF_DIR
    text = HELP[command]
    groups = {f"{{{group}s}}": ", ".join(sorted(p.stem for p in (conf_dir / group).glob("*.yaml")))
              for group in ("experiment", "task", "dataset", "search_space")}
    width = max(len(name) for name, _ in text.options) + 2
    lines = [f"usage: {text.usage}", "", text.summary, "", "Main options:"]
    for name, description in text.options:
        for placeholder, files in groups.items():
            description = description.replace(placeholder, files)
        lines.append(f"  {name:<{width}}{description}")
    lines += ["", "Examples:", *(f"  {example}" for example in text.examples)]
    if text.notes:
        lines += ["", *text.notes]
    return "\n".join(lines) + "\n"
