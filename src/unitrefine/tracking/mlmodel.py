"""The run's model folder as an MLflow model (sklearn flavour, skops), stored once, and its registered version."""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from unitrefine.errors import UnitRefineError
from unitrefine.export.model_info import read_model_info
from unitrefine.tracking.lookups import MODEL_FOLDER
from unitrefine.tracking.uploads import upload_folder

if TYPE_CHECKING:
    from mlflow.models import Model
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

#: MLflow's environment files beside ``MLmodel``.
_CONDA_FILE = "conda.yaml"
_PYTHON_ENV_FILE = "python_env.yaml"


def write_mlmodel(
    dest: Path,
    folder: Path,
    model_file: str,
    input_example: pd.DataFrame,
    trusted_types: list[str],
    pip_requirements: list[str],
    run_id: str | None,
) -> None:
    """Write into ``dest`` the files that make ``folder`` an MLflow model, without serialising the model again.

    What ``mlflow.sklearn.save_model(..., serialization_format="skops", pyfunc_predict_fn="predict_proba")``
    writes beside its own ``model.skops``: ``MLmodel`` (sklearn and python_function flavours pointing at
    ``model_file``, the trusted types, the signature), the input example, ``requirements.txt``,
    ``conda.yaml`` and ``python_env.yaml``. The signature's outputs are ``predict_proba``'s: one float64
    column per class of ``model_info.json``'s ``label_conversion``.

    Parameters
    ----------
    dest : Path
        An empty folder; its files go next to ``model_file`` (they name no other ``.skops`` file).
    folder : Path
        The model folder (``model_file`` and ``model_info.json``).
    model_file : str
        The folder's ``.skops`` file.
    input_example : DataFrame
        A few rows of features.
    trusted_types : list of str
        Types ``mlflow.sklearn.load_model`` passes to ``skops.io.load`` as trusted.
    pip_requirements : list of str
        The model's requirements; MLflow's own pin is added.
    run_id : str or None
        The run whose artifacts hold ``folder``.
    """
    from importlib.metadata import version

    import numpy as np
    from mlflow.models import Model, ModelSignature, infer_signature
    from mlflow.models.utils import _save_example
    from mlflow.types.schema import Schema, TensorSpec

    info = read_model_info(folder)
    outputs = Schema([TensorSpec(np.dtype("float64"), (-1, len(info["label_conversion"])))])
    model = Model(artifact_path=MODEL_FOLDER, run_id=run_id)
    model.signature = ModelSignature(infer_signature(input_example).inputs, outputs)
    _save_example(model, input_example, str(dest))
    _add_python_function(model, model_file)
    model.add_flavor(
        "sklearn", pickled_model=model_file, sklearn_version=version("scikit-learn"), serialization_format="skops",
        code=None, skops_trusted_types=list(trusted_types),
    )
    model.model_size_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    model.save(str(dest / "MLmodel"))
    _write_environment(dest, pip_requirements)


def _add_python_function(model: Model, model_file: str) -> None:
    """The ``python_function`` flavour: ``mlflow.sklearn`` loads ``model_file``, and ``predict_proba`` predicts."""
    with warnings.catch_warnings():
        # Importing mlflow.pyfunc infers schemas of MLflow's own GenAI types and warns that their `Any` hints are not
        # validated (MLflow 3.17): nothing of ours, and nothing a user can act on.
        warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType", category=UserWarning)
        from mlflow.pyfunc import add_to_model

    add_to_model(
        model, loader_module="mlflow.sklearn", model_path=model_file, conda_env=_CONDA_FILE,
        python_env=_PYTHON_ENV_FILE, predict_fn="predict_proba",
    )


def _write_environment(dest: Path, pip_requirements: list[str]) -> None:
    """MLflow's environment files of the model into ``dest``: conda, pip requirements (MLflow's pin added), Python."""
    import yaml
    from mlflow.utils.environment import _process_pip_requirements, _PythonEnv

    conda_env, requirements, _ = _process_pip_requirements([], list(pip_requirements))
    (dest / _CONDA_FILE).write_text(yaml.safe_dump(conda_env, default_flow_style=False), encoding="utf-8")
    (dest / "requirements.txt").write_text("\n".join(requirements), encoding="utf-8")
    _PythonEnv.current().to_yaml(str(dest / _PYTHON_ENV_FILE))


def log_model_folder(
    client: MlflowClient,
    run_id: str,
    folder: Path,
    input_example: pd.DataFrame,
    trusted_types: list[str],
    pip_requirements: list[str],
    registered_name: str | None,
) -> str | None:
    """Make run ``run_id``'s uploaded model folder an MLflow model (sklearn flavour, skops) and register it.

    The model is stored once, compressed: an ``MLmodel`` file (and MLflow's environment and input-example
    files) is written beside the folder's ``.skops`` file in the run's :data:`MODEL_FOLDER` artifacts, its
    sklearn flavour pointing at that file, and the registered version's source is that folder. So
    ``models:/<name>@<alias>`` loads with ``mlflow.sklearn.load_model`` / ``mlflow.pyfunc.load_model``
    (``predict_proba``) as well as with SpikeInterface's ``load_model`` and unitrefine's own loader. The
    folder is uploaded first if the run does not hold it yet (:func:`unitrefine.tracking.uploads.upload_folder`).

    Parameters
    ----------
    client : MlflowClient
    run_id : str
        The training run.
    folder : Path
        The exported model folder (exactly one ``.skops`` file and ``model_info.json``).
    input_example : DataFrame
        A few rows of features, as the model takes them: the signature's inputs and the input example.
    trusted_types : list of str
        The reviewed types the ``.skops`` file needs trusted (:data:`unitrefine.search.estimators.TRUSTED_TYPES`).
    pip_requirements : list of str
        The model's requirements (``package==version``).
    registered_name : str or None
        Register under this name; None: log the MLflow model without registering it.

    Returns
    -------
    str or None
        The registered model version, or None when not registering.
    """
    models = sorted(folder.glob("*.skops"))
    if len(models) != 1:
        raise UnitRefineError(
            f"Model folder {folder} must hold exactly one .skops file; it holds {[m.name for m in models]}."
        )
    model_file = models[0]
    uploaded = {f.path.rsplit("/", 1)[-1]: f.file_size for f in client.list_artifacts(run_id, MODEL_FOLDER)}
    if uploaded.get(model_file.name) != model_file.stat().st_size:
        upload_folder(client, run_id, folder, MODEL_FOLDER)
    with tempfile.TemporaryDirectory(prefix="unitrefine-mlmodel-") as tmp:
        write_mlmodel(Path(tmp), folder, model_file.name, input_example, trusted_types, pip_requirements, run_id)
        client.log_artifacts(run_id, tmp, MODEL_FOLDER)
    return None if registered_name is None else register(client, run_id, registered_name)


def register(client: MlflowClient, run_id: str, name: str) -> str:
    """A new version of registered model ``name`` (created if needed) whose source is run ``run_id``'s
    :data:`MODEL_FOLDER`; its version number."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{MODEL_FOLDER}"
    mv = client.create_model_version(name, source, run_id=run_id)
    log.info("Registered '%s' version %s: the run's %s (%s).", name, mv.version, MODEL_FOLDER, source)
    return str(mv.version)
