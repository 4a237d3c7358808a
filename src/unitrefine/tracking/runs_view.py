"""How an experiment shows in the MLflow UI: its kind, and a saved view of its runs table sorted by ``cv_score``."""

from __future__ import annotations

import json
import time

#: The experiment kind ("Machine learning"). MLflow 3.17's UI does not read it to choose between its GenAI view and
#: the runs: that follows the "GenAI | Model training" switch (or ``?workflowType=`` in the address), see
#: :func:`runs_page`; set for the UIs and tools that do read it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: A saved view of the experiment's runs table (the UI's *Views* menu, or the address :func:`runs_page` gives): the
#: columns :data:`RUNS_VIEW_COLUMNS`, sorted by ``cv_score``. MLflow keeps saved views in experiment tags
#: ``mlflow.sharedViewState.<key>``; it has no setting for the columns a plain visit shows.
RUNS_VIEW_KEY = "unitrefine"
RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW_KEY}"
RUNS_VIEW_NAME = "unitrefine: cv_score"
RUNS_VIEW_COLUMNS = (
    "metrics.`cv_score`", "metrics.`cv_score_std`", "metrics.`holdout_balanced_accuracy`", "params.`classifier`",
)


def experiment_tags() -> dict[str, str]:
    """The tags a unitrefine experiment gets: its kind and the saved view of its runs (:data:`RUNS_VIEW_TAG`).

    The view is what MLflow 3.17's UI writes when one saves a view of the runs table: a JSON envelope (name,
    creation and update times in ms, the state as a JSON string) whose state holds the selected columns and the
    sort order. Columns of metrics or parameters a run does not have are left out by the UI.
    """
    now = int(time.time() * 1000)
    state = {"selectedColumns": list(RUNS_VIEW_COLUMNS), "orderByKey": "metrics.`cv_score`", "orderByAsc": False}
    view = {"name": RUNS_VIEW_NAME, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    return {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, RUNS_VIEW_TAG: json.dumps(view)}


def runs_page(ui: str, experiment_id: str) -> str:
    """The MLflow UI address that opens experiment ``experiment_id`` on its runs, in the view :data:`RUNS_VIEW_TAG`.

    ``workflowType=machine_learning`` is the address form of the UI's "Model training" switch: without it (and
    until someone flips the switch in that browser) MLflow 3.17 opens every experiment on its GenAI view.

    Parameters
    ----------
    ui : str
        Where the UI is served, e.g. ``http://127.0.0.1:5000``.
    experiment_id : str
        The MLflow experiment.
    """
    query = f"workflowType=machine_learning&viewStateShareKey={RUNS_VIEW_KEY}"
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"
