"""Model folders in SpikeInterface's format, written atomically, loaded with the reviewed trusted types.

A folder holds exactly one ``best_model.skops`` (a fitted ``sklearn.pipeline.Pipeline``) and
``model_info.json`` (``metric_params``, ``requirements``, ``label_conversion``), which is what
``spikeinterface.curation.load_model`` reads, plus everything needed to audit the model.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from unitrefine.errors import UnitRefineError
from unitrefine.estimators import TRUSTED_TYPES
from unitrefine.model_info import INFO_FILE, read_model_info  # noqa: F401  (INFO_FILE: the folder contract's names)

log = logging.getLogger(__name__)

MODEL_FILE = "best_model.skops"
_PACKAGES = ("spikeinterface", "scikit-learn", "skops", "numpy", "imbalanced-learn", "xgboost", "unitrefine")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a model depends on (missing ones are left out)."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
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


def check_output_folder(folder: Path, overwrite: bool, any_folder: bool = False) -> None:
    """Fail before any work if ``folder`` may not be written: it exists (without ``overwrite``), or it is not a
    model folder that ``overwrite`` may replace (a file is never replaced; a folder of other files only with
    ``any_folder``, for folders unitrefine itself made, such as generated recordings)."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise UnitRefineError(f"Output folder {folder} is an existing file; it is not replaced. Choose another "
                              "output.folder (a folder to create).")
    if not overwrite:
        raise UnitRefineError(
            f"Output folder {folder} already exists. Choose another output.folder, or set output.overwrite=true."
        )
    if not any_folder and any(folder.iterdir()) and not (folder / INFO_FILE).is_file():
        raise UnitRefineError(f"Output folder {folder} holds files but no {INFO_FILE}: it is not a model folder, and "
                              "output.overwrite only replaces model folders. Choose another output.folder.")


@contextmanager
def staged_folder(folder: Path, overwrite: bool, any_folder: bool = False) -> Iterator[Path]:
    """A staging folder next to ``folder``, renamed into place when the ``with`` block ends without an error.

    On an error or an interruption the staging folder is removed and ``folder`` is left as it was, so no
    half-written (or half-registered) model folder is ever seen. With ``overwrite``, an existing model folder
    is replaced only at that last rename (see :func:`check_output_folder` for ``any_folder``).
    """
    check_output_folder(folder, overwrite, any_folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        check_output_folder(folder, overwrite, any_folder)
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            folder.rename(old)
            staging.rename(folder)
            shutil.rmtree(old)
        else:
            staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_model_folder(folder: Path, fill: Callable[[Path], None], overwrite: bool, any_folder: bool = False) -> Path:
    """Write a model folder atomically: ``fill(staging_dir)`` writes its files (:func:`staged_folder`).

    Returns
    -------
    Path
        ``folder``.
    """
    with staged_folder(folder, overwrite, any_folder) as staging:
        fill(staging)
    return folder


def dump_model(pipeline: Any, folder: Path) -> Path:
    """Serialise the pipeline with skops as ``best_model.skops``, deflate-compressed (fastest level).

    Forests of deep trees are large; their arrays deflate ~7x even at deflate's fastest level, which costs
    a fifth of the serialisation time where level 6 cost half (an ensemble of five 300-tree forests: 46 s
    uncompressed, 55 s at level 1 for 38 MB, 70 s at level 6 for 34 MB). Loading (``skops.io.load``,
    SpikeInterface's ``load_model``) reads compressed entries as they are, no slower.
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
        If the file holds any other type; the message names them. Nothing from the file is executed.
    """
    import skops.io as sio

    trusted = set(trusted)
    untrusted = sorted(set(sio.get_untrusted_types(file=path)) - trusted)
    if untrusted:
        raise UnitRefineError(
            f"{path} contains types that are not on unitrefine's reviewed list: {untrusted}. It was not loaded. "
            "Only if you trust its author and have reviewed these types, trust them explicitly "
            "(python -m unitrefine.predict ... trust=[...])."
        )
    return sio.load(path, trusted=sorted(trusted))


def load_model_folder(folder: Path, trusted: Iterable[str] = TRUSTED_TYPES) -> tuple[Any, dict[str, Any]]:
    """Load a model folder (ours or SpikeInterface's) safely.

    Parameters
    ----------
    folder : Path
        Holds exactly one ``.skops`` file and ``model_info.json``.
    trusted : iterable of str
        Types trusted beyond skops' defaults: the reviewed :data:`~unitrefine.estimators.TRUSTED_TYPES`,
        plus whatever a user explicitly chose to trust.

    Returns
    -------
    pipeline, model_info
    """
    if not folder.is_dir():
        raise UnitRefineError(f"Model folder {folder} does not exist.")
    models = sorted(folder.glob("*.skops"))
    if len(models) != 1:
        raise UnitRefineError(
            f"Model folder {folder} must hold exactly one .skops file; it holds {[m.name for m in models] or 'none'}."
        )
    info = read_model_info(folder)
    return load_skops(models[0], trusted), info


def write_tables(folder: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Write each table as ``<name>`` (CSV) into ``folder``."""
    for name, df in tables.items():
        df.to_csv(folder / name, index=False)
