"""Model folders in SpikeInterface's format, written atomically, loaded with the reviewed trusted types.

A folder holds exactly one ``best_model.skops`` (a fitted ``sklearn.pipeline.Pipeline``) and
``model_info.json`` (``metric_params``, ``requirements``, ``label_conversion``), which is what
``spikeinterface.curation.load_model`` reads, plus everything needed to audit the model.
"""

from __future__ import annotations

import json
import logging
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from unitrefine import folders
from unitrefine.errors import UnitRefineError
from unitrefine.export.model_info import INFO_FILE, read_model_info  # noqa: F401  (INFO_FILE: the folder contract's names)
from unitrefine.process import DISTRIBUTION
from unitrefine.search.estimators import TRUSTED_TYPES

log = logging.getLogger(__name__)

MODEL_FILE = "best_model.skops"
#: What a model folder records of its training run, beside :data:`MODEL_FILE` and ``model_info.json``: the
#: configuration, the leaderboard (every trial), the units the exported model was fitted on and their labels, and the
#: held-out predictions. ``unitrefine.recreate``, ``search.warm_start`` and ``unitrefine.promote`` read them back.
CONFIG_FILE = "config.yaml"
LEADERBOARD_FILE = "model_accuracies.csv"
TRAINING_DATA_FILE = "training_data.csv"
LABELS_FILE = "labels.csv"
HOLDOUT_PREDICTIONS_FILE = "holdout_predictions.csv"
_PACKAGES = ("spikeinterface", "scikit-learn", "skops", "numpy", "imbalanced-learn", "xgboost", "unitrefine")


#: The distributions that may provide a package (XGBoost also ships as ``xgboost-cpu``, without the GPU code).
_DISTRIBUTIONS = {"unitrefine": (DISTRIBUTION,), "xgboost": ("xgboost", "xgboost-cpu")}


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a model depends on (missing ones are left out)."""
    out = {}
    for name in _PACKAGES:
        for distribution in _DISTRIBUTIONS.get(name, (name,)):
            try:
                out[name] = version(distribution)
                break
            except PackageNotFoundError:
                continue
    return out


def metric_params_for(features: Iterable[str]) -> dict[str, dict[str, list[str]]]:
    """``metric_params`` for CSV-trained models: which features are SpikeInterface quality/template metrics."""
    from spikeinterface.metrics import ComputeQualityMetrics, ComputeTemplateMetrics

    quality = set(ComputeQualityMetrics.get_metric_columns())
    template = set(ComputeTemplateMetrics.get_metric_columns())
    features = list(features)
    return {
        "quality_metric_params": {"metric_names": [f for f in features if f in quality]},
        "template_metric_params": {"metric_names": [f for f in features if f in template]},
    }


def check_output_folder(folder: Path, overwrite: bool) -> None:
    """:func:`unitrefine.folders.check_output_folder` for a model folder: ``overwrite`` replaces only a folder
    holding ``model_info.json``."""
    folders.check_output_folder(folder, overwrite, INFO_FILE)


def staged_folder(folder: Path, overwrite: bool) -> AbstractContextManager[Path]:
    """:func:`unitrefine.folders.staged_folder` for a model folder (see :func:`check_output_folder`)."""
    return folders.staged_folder(folder, overwrite, INFO_FILE)


def write_model_folder(folder: Path, fill: Callable[[Path], None], overwrite: bool) -> Path:
    """Write a model folder atomically: ``fill(staging_dir)`` writes its files (:func:`staged_folder`)."""
    return folders.write_folder(folder, fill, overwrite, INFO_FILE)


def dump_model(pipeline: Any, folder: Path) -> Path:
    """Serialise the pipeline with skops as ``best_model.skops``, deflate-compressed (fastest level).

    Forests of deep trees are large and compress well; deflate's fastest level gets most of the size reduction
    for a fraction of the time level 6 adds (measured in benchmarks/results/run_time_*.md, "write"). Loading
    (``skops.io.load``, SpikeInterface's ``load_model``) reads compressed entries as they are, no slower.
    """
    import zipfile

    import skops.io as sio

    path = folder / MODEL_FILE
    sio.dump(pipeline, path, compression=zipfile.ZIP_DEFLATED, compresslevel=1)
    return path


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON."""
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


def load_skops(path: Path, trusted: Iterable[str] = TRUSTED_TYPES) -> Any:
    """Load a skops file, trusting only ``trusted`` (the reviewed list) beyond skops' defaults.

    Raises
    ------
    UnitRefineError
        If the file holds any other type (the message names them; nothing from the file is executed), or it
        cannot be read or is damaged (e.g. truncated by an interrupted copy); the message names the file.
    """
    import skops.io as sio

    trusted = set(trusted)
    with _model_file_errors(path, "could not be read"):
        untrusted = sorted(set(sio.get_untrusted_types(file=path)) - trusted)
    if untrusted:
        raise UnitRefineError(
            f"{path} contains types that are not on unitrefine's reviewed list: {untrusted}. It was not loaded. "
            "Only if you trust its author and have reviewed these types, trust them explicitly "
            "(python -m unitrefine.predict ... trust=[...])."
        )
    with _model_file_errors(path, "could not be loaded"):
        return sio.load(path, trusted=sorted(trusted))


#: What skops raises for a damaged file: not a zip (truncated), a bad deflate stream or CRC, a missing or broken
#: schema.json, an entry of the wrong kind.
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, KeyError, ValueError, TypeError)


@contextmanager
def _model_file_errors(path: Path, what: str) -> Iterator[None]:
    """Turn the errors of reading a model file into a :class:`UnitRefineError` that names it."""
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        yield
    except UntrustedTypesFoundException as exc:  # a TypeError: not a damaged file
        raise UnitRefineError(f"{path} contains types that are not trusted: {exc}. It was not loaded.") from None
    except OSError as exc:
        raise UnitRefineError(f"The model file {path} {what}: {exc.strerror or exc}. Check that it exists and that "
                              "you may read it.") from None
    except _DAMAGED as exc:
        raise UnitRefineError(
            f"The model file {path} {what}: it is damaged or not a skops file ({type(exc).__name__}: {exc}), e.g. "
            "truncated by an interrupted copy or download, or written by other skops / scikit-learn versions than "
            "installed here (model_info.json requirements). Copy or export the model folder again."
        ) from None


def load_model_folder(folder: Path, trusted: Iterable[str] = TRUSTED_TYPES) -> tuple[Any, dict[str, Any]]:
    """Load a model folder (ours or SpikeInterface's) safely.

    Parameters
    ----------
    folder : Path
        Holds exactly one ``.skops`` file and ``model_info.json``; or the ``.skops`` file itself, with the
        ``model_info.json`` beside it (that file is loaded, whatever else the folder holds).
    trusted : iterable of str
        Types trusted beyond skops' defaults: the reviewed :data:`~unitrefine.search.estimators.TRUSTED_TYPES`,
        plus whatever a user explicitly chose to trust.

    Returns
    -------
    pipeline, model_info

    Raises
    ------
    UnitRefineError
        A missing folder, a file that is not a ``.skops`` file, not exactly one ``.skops`` file, a missing or bad
        ``model_info.json``, untrusted types, or a damaged model file; the message names the file.
    """
    if folder.is_file():
        if folder.suffix != ".skops":
            raise UnitRefineError(f"Model {folder} is a file, not a model folder: give the folder that holds "
                                  f"{MODEL_FILE} and {INFO_FILE}.")
        model_file, folder = folder, folder.parent
    elif not folder.is_dir():
        raise UnitRefineError(f"Model folder {folder} does not exist.")
    else:
        models = sorted(folder.glob("*.skops"))
        if len(models) != 1:
            held = [m.name for m in models] or "none"
            raise UnitRefineError(f"Model folder {folder} must hold exactly one .skops file; it holds {held}.")
        model_file = models[0]
    info = read_model_info(folder)
    return load_skops(model_file, trusted), info


def write_tables(folder: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Write each table as ``<name>`` (CSV) into ``folder``."""
    for name, df in tables.items():
        df.to_csv(folder / name, index=False)
