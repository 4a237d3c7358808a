"""The final curated labels: the curator's label where they reviewed a unit, the model's elsewhere.

``python -m unitrefine.merge_review`` without the command line. It reads a predictions table
(``unitrefine.predict``'s output, typically with a review queue, ``review=...``) and the curator's labels (a Phy
``cluster_group.tsv`` or a labels CSV, read by :mod:`unitrefine.data.labelled`), and writes one table with the label
of every unit and where it came from (``label_source``: ``curator`` or ``model``). A unit counts as reviewed when
the review file gives it a label (empty and Phy's ``unsorted`` do not count). The curator's labels are put into
the model's classes: as they are when they name a class, through the task's Phy-group mapping otherwise
(:data:`PHY_GROUPS`, as ``conf/task/*.yaml``: ``mua`` is ``other`` for SUA vs all, ``good`` is ``sua`` in the
cascade), or through ``mapping=`` for other models. The curator's files are only read.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from unitrefine.apply import predict_io as io
from unitrefine.apply.command_paths import check_not_input, input_path, labels_inputs, output_path
from unitrefine.data.labelled import Options, check_known_units, read_unit_labels
from unitrefine.data.tables import listed, read_table
from unitrefine.errors import UnitRefineError
from unitrefine.options import command_options

log = logging.getLogger(__name__)

#: How a curator's Phy group maps to a model's classes, by the model's class set (as ``conf/task/*.yaml`` map
#: them; the cascade noise vs neural then SUA vs MUA predicts noise/mua/sua). Labels naming a class map to it.
PHY_GROUPS: dict[frozenset[str], dict[str, str]] = {
    frozenset({"good", "mua", "noise"}): {},
    frozenset({"other", "good"}): {"mua": "other", "noise": "other"},
    frozenset({"neural", "noise"}): {"good": "neural", "mua": "neural"},
    frozenset({"mua", "sua"}): {"good": "sua"},
    frozenset({"noise", "mua", "sua"}): {"good": "sua"},
}
_OPTIONS = Options(labels="review", data="predictions")


@dataclass(kw_only=True)
class MergeReviewConfig:
    """What ``python -m unitrefine.merge_review`` is asked to do; the defaults are ``conf/merge_review.yaml``'s."""

    predictions: str
    review: str
    output: str
    overwrite: bool
    mapping: dict[str, str]


def parse_merge_review_config(cfg: DictConfig | dict[str, Any]) -> MergeReviewConfig:
    """Validate a composed ``merge_review`` config.

    Raises
    ------
    UnitRefineError
        Unknown keys, missing ``predictions``/``review``/``output``, or a ``mapping`` that is not label: class.
    """
    raw = command_options(cfg, MergeReviewConfig, "merge_review", ("predictions", "review", "output"),
                          "predictions=<the csv unitrefine.predict wrote> review=<Phy folder, cluster_group.tsv "
                          "or labels csv> output=<csv>")
    mapping = raw.get("mapping") or {}
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise UnitRefineError(
            f"mapping= maps a curator's label to a model class, e.g. mapping={{good:sua}}; got {mapping!r}."
        )
    raw["mapping"] = {str(k).strip().lower(): str(v).strip() for k, v in mapping.items()}
    return MergeReviewConfig(**raw)


@dataclass
class ReviewSummary:
    """How the model's labels compare with the curator's on the reviewed units."""

    n_units: int
    n_reviewed: int
    n_agreed: int
    #: ``{curator's class: {"reviewed": n, "agreed": n model agreed}}``
    per_class: dict[str, dict[str, int]]
    #: Units the predictions queued (``needs_review``), and how many of them the curator reviewed (None: no queue).
    n_queued: int | None = None
    n_queued_reviewed: int | None = None

    @property
    def agreement(self) -> float | None:
        """The share of reviewed units where the model's label was the curator's (None: nothing reviewed)."""
        return self.n_agreed / self.n_reviewed if self.n_reviewed else None

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain values (for JSON or a report)."""
        return {**asdict(self), "agreement": self.agreement}

    def text(self) -> str:
        """One line: agreement overall and per class, and the queue's coverage."""
        if not self.n_reviewed:
            return f"No unit of the {self.n_units} was reviewed: every label is the model's."
        classes = ", ".join(f"{c} {v['agreed']}/{v['reviewed']}" for c, v in self.per_class.items())
        out = (f"The curator reviewed {self.n_reviewed} of {self.n_units} units; the model agreed on {self.n_agreed} "
               f"({100 * (self.agreement or 0.0):.1f} %; by the curator's class: {classes}).")
        if self.n_queued is not None:
            out += f" {self.n_queued_reviewed} of the {self.n_queued} queued units (needs_review) were reviewed."
        return out


@dataclass
class MergeResult:
    """What a merge produced."""

    labels: pd.DataFrame
    output: Path
    summary: ReviewSummary


def read_predictions(path: Path) -> pd.DataFrame:
    """A predictions table as ``unitrefine.predict`` writes it (all cells as strings).

    Raises
    ------
    UnitRefineError
        A missing or unreadable file, missing columns, or a unit listed twice.
    """
    if not path.is_file():
        raise UnitRefineError(
            f"The predictions {path} (predictions=) do not exist: give the CSV unitrefine.predict wrote."
        )
    df = read_table(path, "predictions")
    missing = [c for c in ("recording", "unit_id", "predicted_label") if c not in df.columns]
    if missing:
        raise UnitRefineError(
            f"{path} (predictions=) lacks the columns {missing} (it has {listed(list(df.columns))}): give the CSV "
            "unitrefine.predict wrote."
        )
    df["recording"], df["unit_id"] = df["recording"].fillna("").str.strip(), df["unit_id"].str.strip()
    dup = df[df.duplicated(["recording", "unit_id"])]
    if not dup.empty:
        twice = listed(list(zip(dup["recording"], dup["unit_id"])))
        raise UnitRefineError(
            f"{path} (predictions=) lists units twice: {twice}. Give the CSV unitrefine.predict wrote."
        )
    return df


def model_classes(predictions: pd.DataFrame) -> list[str]:
    """The model's classes: its ``probability_<class>`` columns, else the labels it predicted."""
    named = [c[len("probability_"):] for c in predictions.columns if c.startswith("probability_")]
    return named or sorted(predictions["predicted_label"].dropna().unique())


def to_classes(labels: pd.DataFrame, classes: list[str], mapping: dict[str, str]) -> pd.Series:
    """The curator's labels as the model's classes (case-insensitive; ``mapping`` before :data:`PHY_GROUPS`).

    Raises
    ------
    UnitRefineError
        Labels that name no class and have no mapping, or a mapping to something that is not a class.
    """
    by_name = {c.lower(): c for c in classes}
    wrong = sorted(v for v in mapping.values() if v not in classes)
    if wrong:
        raise UnitRefineError(f"mapping= maps to {wrong}, which are not classes of the predictions {classes}.")
    groups = {k: by_name[v.lower()] for k, v in PHY_GROUPS.get(frozenset(classes), {}).items()}
    lookup = {**groups, **by_name, **mapping}
    mapped = labels["label"].str.lower().map(lookup)
    unknown = labels[mapped.isna()]
    if not unknown.empty:
        raise UnitRefineError(
            f"{unknown['source'].iloc[0]} (review=): labels {listed(sorted(unknown['label'].unique()))} (units "
            f"{listed(unknown['unit_id'].tolist())}) are not classes of the predictions {classes}. Fix them, or say "
            "what they are with mapping={<label>:<class>}."
        )
    return mapped


def _check_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    """The output must not be an input (the curator's files and the predictions are only read) and must be writable."""
    check_not_input(output, inputs)
    io.check_writable([output], overwrite)


def merged_table(predictions: pd.DataFrame, labels: pd.DataFrame, curator: pd.Series) -> pd.DataFrame:
    """``recording, unit_id, label, label_source, curator_label`` and the prediction's columns."""
    reviewed = pd.Series(curator.to_numpy(), index=pd.MultiIndex.from_frame(labels[["recording", "unit_id"]]))
    keys = pd.MultiIndex.from_frame(predictions[["recording", "unit_id"]])
    curator_label = reviewed.reindex(keys).to_numpy(dtype=object)
    is_reviewed = pd.notna(curator_label)
    out = predictions[["recording", "unit_id"]].copy()
    out["label"] = np.where(is_reviewed, curator_label, predictions["predicted_label"].to_numpy(dtype=object))
    out["label_source"] = np.where(is_reviewed, "curator", "model")
    out["curator_label"] = curator_label
    rest = [c for c in predictions.columns if c not in ("recording", "unit_id")]
    return pd.concat([out, predictions[rest]], axis=1)


def summarise(table: pd.DataFrame) -> ReviewSummary:
    """Agreement of the model with the curator on the reviewed units of a :func:`merged_table`."""
    done = table[table["label_source"] == "curator"]
    agreed = (done["curator_label"] == done["predicted_label"]).to_numpy()
    per_class = {str(c): {"reviewed": int((done["curator_label"] == c).sum()),
                          "agreed": int(agreed[(done["curator_label"] == c).to_numpy()].sum())}
                 for c in sorted(done["curator_label"].unique())}
    summary = ReviewSummary(len(table), len(done), int(agreed.sum()), per_class)
    if "needs_review" in table.columns:
        queued = table["needs_review"].astype(str).str.strip().str.lower().isin(("true", "1")).to_numpy()
        summary.n_queued = int(queued.sum())
        summary.n_queued_reviewed = int((queued & (table["label_source"] == "curator").to_numpy()).sum())
    return summary


def merge_review(cfg: MergeReviewConfig) -> MergeResult:
    """Write the final curated labels: the curator's where they reviewed a unit, the model's elsewhere.

    Parameters
    ----------
    cfg : MergeReviewConfig

    Returns
    -------
    MergeResult
        The table written, where, and the agreement summary (also logged).

    Raises
    ------
    UnitRefineError
        Missing files or columns, a review file naming units or recordings the predictions do not have,
        labels that are not the model's classes, or an output that is an input or exists (without
        ``overwrite``). Nothing is written then; the output is written atomically.
    """
    predictions_path = input_path(cfg.predictions, "predictions")
    review_path = input_path(cfg.review, "review")
    output = output_path(cfg.output)
    _check_output(output, [predictions_path, review_path], cfg.overwrite)
    predictions = read_predictions(predictions_path)
    recordings = list(dict.fromkeys(predictions["recording"]))
    # Every file the review may be read from (the layouts of unitrefine.data.labelled), before reading any of them.
    _check_output(output, labels_inputs(review_path, recordings), cfg.overwrite)
    labels = read_unit_labels(review_path, recordings, _OPTIONS)
    check_known_units(predictions, labels, _OPTIONS)
    curator = to_classes(labels, model_classes(predictions), cfg.mapping)
    table = merged_table(predictions, labels, curator)
    for rec, part in table.groupby("recording", sort=False):
        if (part["label_source"] == "curator").all() and len(part) > 1:
            log.warning("Recording '%s': the review file labels every unit. If these are a sorter's labels (Kilosort "
                        "writes cluster_group.tsv), they are taken as the curator's.", rec)
    io.write_predictions(table, output)
    summary = summarise(table)
    log.info("%s Wrote %s (label_source: %d curator, %d model).", summary.text(), output, summary.n_reviewed,
             summary.n_units - summary.n_reviewed)
    return MergeResult(table, output, summary)
