"""Merging a curator's review into the model's labels (``unitrefine.merge_review``, :mod:`unitrefine.apply.curated`).

A real model (fitted on seeded data) predicts with a review queue; the "curator" labels the queued units with
the seeded truth, in the layouts a lab has (Phy folders, a labels CSV); the merge is checked against that truth.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from _tiny_models import fit_model, truth, write_unlabelled
from conftest import snapshot
from sklearn.metrics import balanced_accuracy_score

from unitrefine.apply.curated import PHY_GROUPS, merge_review, parse_merge_review_config
from unitrefine.apply.prediction import parse_predict_config, predict
from unitrefine.config import CONF_DIR
from unitrefine.errors import UnitRefineError
from unitrefine.model.uncertainty import Stage, curated_scores, table_uncertainty


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SUA vs all, deciding at P(good) >= 0.3 (classes other, good: a curator's Phy groups must be mapped)."""
    return fit_model(tmp_path_factory.mktemp("merge_model") / "sua", "sua_vs_all", threshold=0.3)


@pytest.fixture
def predicted(tmp_path: Path, model: Path) -> tuple[Path, pd.DataFrame]:
    """Predictions with a 20 % review queue for two recordings (recA 30 units, recB 20)."""
    data = write_unlabelled(tmp_path / "new", {"recA": (30, 11), "recB": (20, 12)})
    out = tmp_path / "predictions.csv"
    predict(parse_predict_config({"model": str(model), "data": str(data), "output": str(out), "review": 0.2}))
    return out, pd.read_csv(out, dtype={"unit_id": str})


def run(**options: Any):
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}
    return merge_review(parse_merge_review_config(plain))


def phy_review(folder: Path, ids: list[str], labels: list[str], all_ids: list[str]) -> Path:
    """A Phy cluster_group.tsv: the reviewed units' groups, every other cluster unsorted (Phy's default)."""
    folder.mkdir(parents=True, exist_ok=True)
    groups = dict(zip(ids, labels))
    pd.DataFrame({"cluster_id": all_ids, "group": [groups.get(i, "unsorted") for i in all_ids]}).to_csv(
        folder / "cluster_group.tsv", sep="\t", index=False)
    return folder


def test_the_curators_labels_replace_the_models_on_the_reviewed_units(tmp_path: Path, predicted) -> None:
    path, preds = predicted
    data = tmp_path / "new"
    # The curator reviews the queue of each recording in Phy: one Phy folder per recording (Phy's own groups).
    review = tmp_path / "review"
    for rec in ("recA", "recB"):
        part = preds[preds["recording"] == rec]
        queued = part[part["needs_review"]]["unit_id"].tolist()
        phy_review(review / rec, queued, [truth(data, rec)[u] for u in queued], part["unit_id"].tolist())
    before = {p: p.read_bytes() for p in review.rglob("*.tsv")}
    result = run(predictions=path, review=review, output=tmp_path / "final.csv")
    final = pd.read_csv(tmp_path / "final.csv", dtype={"unit_id": str})
    assert list(final.columns[:5]) == ["recording", "unit_id", "label", "label_source", "curator_label"]
    assert {p: p.read_bytes() for p in review.rglob("*.tsv")} == before  # the curator's files are only read
    true = np.concatenate([truth(data, r).reindex(preds.loc[preds["recording"] == r, "unit_id"]).to_numpy()
                           for r in ("recA", "recB")])
    true_class = np.where(true == "good", "good", "other")  # SUA vs all, as conf/task/sua_vs_all.yaml maps Phy groups
    queued = preds["needs_review"].to_numpy()
    assert (final["label_source"] == np.where(queued, "curator", "model")).all()
    assert (final["label"][queued] == true_class[queued]).all()
    assert (final["label"][~queued] == preds["predicted_label"][~queued]).all()
    # The summary: agreement of the model with the reviewed units, overall and by the curator's class.
    agreed = preds["predicted_label"].to_numpy()[queued] == true_class[queued]
    s = result.summary
    assert (s.n_units, s.n_reviewed, s.n_agreed, s.n_queued, s.n_queued_reviewed) == (50, 10, agreed.sum(), 10, 10)
    assert s.agreement == pytest.approx(agreed.mean()) and 0 < s.agreement < 1
    for c in ("good", "other"):
        mine = true_class[queued] == c
        assert s.per_class[c] == {"reviewed": int(mine.sum()), "agreed": int(agreed[mine].sum())}
    # The merged labels score exactly what the shared estimate function says a 20 % review buys.
    scores = table_uncertainty(preds, [Stage(["other", "good"], 0.3)])
    expected = curated_scores(true_class, preds["predicted_label"].to_numpy(), scores, [0.2])[0.2]
    assert balanced_accuracy_score(true_class, final["label"]) == pytest.approx(expected)


def test_a_labels_csv_with_a_recording_column_and_units_off_the_queue(
    tmp_path: Path, predicted, caplog: pytest.LogCaptureFixture
) -> None:
    path, preds = predicted
    off_queue = preds[~preds["needs_review"]].iloc[:2]
    queued = preds[preds["needs_review"]].iloc[:3]
    reviewed = pd.concat([queued, off_queue])
    pd.DataFrame({"recording": reviewed["recording"], "cluster_id": reviewed["unit_id"],
                  "label": ["Good", "mua", "noise", "good", "noise"]}).to_csv(tmp_path / "labels.csv", index=False)
    with caplog.at_level(logging.INFO, logger="unitrefine"):
        result = run(predictions=path, review=tmp_path / "labels.csv", output=tmp_path / "final.csv")
    final = result.labels.set_index(["recording", "unit_id"])
    keys = list(zip(reviewed["recording"], reviewed["unit_id"]))
    assert final.loc[keys, "label"].tolist() == ["good", "other", "other", "good", "other"]
    assert (result.summary.n_reviewed, result.summary.n_queued, result.summary.n_queued_reviewed) == (5, 10, 3)
    assert "3 of the 10 queued units (needs_review) were reviewed" in caplog.text


def test_a_single_recordings_phy_folder_and_a_custom_mapping(tmp_path: Path, model: Path) -> None:
    data = write_unlabelled(tmp_path / "new", {"only": (20, 31)})
    predict(parse_predict_config({"model": str(model), "data": str(data / "only.csv"),
                                  "output": str(tmp_path / "p.csv")}))
    ids = pd.read_csv(tmp_path / "p.csv", dtype={"unit_id": str})["unit_id"].tolist()
    phy = phy_review(tmp_path / "phy", ids[:2], ["single", "noise"], ids)
    message = _refused(tmp_path, predictions=tmp_path / "p.csv", review=phy, output=tmp_path / "final.csv")
    assert message == (f"{phy / 'cluster_group.tsv'} (review=): labels 'single' (units '1') are not classes of the "
                       "predictions ['other', 'good']. Fix them, or say what they are with mapping={<label>:<class>}.")
    result = run(predictions=tmp_path / "p.csv", review=phy, output=tmp_path / "final.csv", mapping={"single": "good"})
    assert result.labels["label"].tolist()[:2] == ["good", "other"]
    assert result.summary.n_queued is None and "queued" not in result.summary.text()  # predicted without review=


def _error(**options: Any) -> str:
    with pytest.raises(UnitRefineError) as excinfo:
        run(**options)
    return str(excinfo.value)


def _refused(root: Path, **options: Any) -> str:
    """The message merge_review refuses ``options`` with; every file under ``root`` must be left as it was."""
    before = snapshot(root)
    message = _error(**options)
    assert snapshot(root) == before
    return message


def test_bad_reviews_are_clear_errors_and_write_nothing(tmp_path: Path, predicted) -> None:
    path, preds = predicted
    out = tmp_path / "final.csv"
    recA = preds[preds["recording"] == "recA"]["unit_id"].tolist()
    # Units the predictions do not have: named, first few.
    pd.DataFrame({"recording": "recA", "cluster_id": [recA[0], "999", "1001"], "group": "good"}).to_csv(
        tmp_path / "strangers.csv", index=False)
    message = _refused(tmp_path, predictions=path, review=tmp_path / "strangers.csv", output=out)
    assert message.startswith(f"{tmp_path / 'strangers.csv'}: labels for units '999', '1001' of recording 'recA' that "
                              "are not in predictions=")
    # A review file without a recording column, for predictions of two recordings.
    pd.DataFrame({"cluster_id": recA[:2], "group": "good"}).to_csv(tmp_path / "plain.tsv", sep="\t", index=False)
    message = _refused(tmp_path, predictions=path, review=tmp_path / "plain.tsv", output=out)
    assert f"{tmp_path / 'plain.tsv'} has no 'recording' column, but predictions= holds 2 recordings" in message
    assert "review= a folder" in message
    # Labels that are no class of the model.
    pd.DataFrame({"recording": "recB", "unit_id": [preds["unit_id"].iloc[-1]], "group": ["maybe"]}).to_csv(
        tmp_path / "odd.csv", index=False)
    message = _refused(tmp_path, predictions=path, review=tmp_path / "odd.csv", output=out)
    assert f"{tmp_path / 'odd.csv'} (review=): labels 'maybe'" in message and "['other', 'good']" in message
    # Missing columns, missing files.
    preds.drop(columns="predicted_label").to_csv(tmp_path / "cut.csv", index=False)
    message = _refused(tmp_path, predictions=tmp_path / "cut.csv", review=tmp_path / "odd.csv", output=out)
    assert f"{tmp_path / 'cut.csv'} (predictions=) lacks the columns ['predicted_label']" in message
    message = _refused(tmp_path, predictions=path, review=tmp_path / "nope", output=out)
    assert message == f"The labels {tmp_path / 'nope'} (review=) do not exist."
    pd.DataFrame({"recording": "recA", "cluster_id": [recA[0]], "a": ["x"], "b": ["y"]}).to_csv(tmp_path / "ab.csv",
                                                                                                 index=False)
    message = _refused(tmp_path, predictions=path, review=tmp_path / "ab.csv", output=out)
    assert message.startswith(f"{tmp_path / 'ab.csv'}: cannot tell which column holds the labels among 'a', 'b'")


def test_inputs_are_never_overwritten(tmp_path: Path, predicted) -> None:
    path, preds = predicted
    phy = phy_review(tmp_path / "recA", [], [], preds[preds["recording"] == "recA"]["unit_id"].tolist())
    pd.DataFrame({"recording": "recA", "cluster_id": [preds["unit_id"].iloc[0]], "group": "good"}).to_csv(
        tmp_path / "labels.csv", index=False)
    before = {p: p.read_bytes() for p in (path, phy / "cluster_group.tsv", tmp_path / "labels.csv")}
    for review, output in ((tmp_path / "labels.csv", path), (tmp_path / "labels.csv", tmp_path / "labels.csv"),
                           (tmp_path, tmp_path / "recA" / "cluster_group.tsv"), (phy, phy / "cluster_group.tsv")):
        message = _error(predictions=path, review=review, output=output, overwrite=True)
        assert f"output={output} is an input" in message and "never overwritten" in message
    (tmp_path / "final.csv").write_text("keep me\n")
    message = _error(predictions=path, review=tmp_path / "labels.csv", output=tmp_path / "final.csv")
    assert "final.csv already exist(s)" in message and "set overwrite=true" in message
    assert (tmp_path / "final.csv").read_text() == "keep me\n"
    assert {p: p.read_bytes() for p in before} == before


def test_outputs_that_cannot_be_written_are_refused_before_reading(tmp_path: Path, predicted,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder, a path under a file, a relative input that is nowhere: named, nothing written. Relative paths are
    taken from the working directory."""
    path, preds = predicted
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"recording": "recA", "cluster_id": [preds["unit_id"].iloc[0]], "group": "good"}).to_csv(
        tmp_path / "labels.csv", index=False)
    (tmp_path / "final").mkdir()
    for options, message in (
        ({"output": "final", "overwrite": True}, f"output={tmp_path / 'final'} is a folder, not a file"),
        ({"output": "labels.csv/final.csv"}, f"cannot be written: {tmp_path / 'labels.csv'} is a file, not a folder"),
        ({"output": "out.csv", "review": "nope.csv"},
         f"review=nope.csv does not exist: looked in the working directory ({tmp_path / 'nope.csv'})"),
    ):
        before = snapshot(tmp_path)
        assert message in _error(**{"predictions": "predictions.csv", "review": "labels.csv", **options})
        assert snapshot(tmp_path) == before
    result = run(predictions="predictions.csv", review="labels.csv", output="merged/final.csv")
    assert result.output == tmp_path / "merged" / "final.csv"
    merged = pd.read_csv(result.output, dtype={"unit_id": str})
    assert merged[["recording", "unit_id"]].values.tolist() == preds[["recording", "unit_id"]].values.tolist()
    assert merged["label_source"].tolist() == ["curator"] + ["model"] * (len(preds) - 1)
    assert merged["label"].iloc[0] == "good"


@pytest.mark.parametrize(
    ("options", "message"),
    [({"review": "r", "output": "o"}, "Set predictions=..."),
     ({"predictions": "p", "review": "r", "output": "o", "mapp": {}},
      "Unknown merge_review option(s): mapp (did you mean mapping?)"),
     ({"predictions": "p", "review": "r", "output": "o", "mapping": ["good"]}, "mapping= maps a curator's label")],
)
def test_bad_options(options: dict, message: str) -> None:
    with pytest.raises(UnitRefineError) as excinfo:
        parse_merge_review_config(options)
    assert message in str(excinfo.value)


def test_the_phy_group_mappings_are_the_tasks(tmp_path: Path) -> None:
    """:data:`PHY_GROUPS` says what conf/task/*.yaml say (the cascade: noise from the first stage, the rest from
    the second)."""
    tasks = {p.stem: yaml.safe_load(p.read_text()) for p in (CONF_DIR / "task").glob("*.yaml")}
    assert set(tasks) == {"three_class", "sua_vs_all", "noise_vs_neural", "sua_vs_mua"}
    for task in tasks.values():
        expected = {k: v for k, v in task["mapping"].items() if v is not None and k != v}
        assert PHY_GROUPS[frozenset(task["classes"])] == expected
    cascade = frozenset(["noise", *tasks["sua_vs_mua"]["classes"]])
    assert PHY_GROUPS[cascade] == {k: v for k, v in tasks["sua_vs_mua"]["mapping"].items() if v and k != v}


def test_merge_review_command(tmp_path: Path, predicted) -> None:
    path, preds = predicted
    queued = preds[preds["needs_review"]]
    pd.DataFrame({"recording": queued["recording"], "cluster_id": queued["unit_id"], "group": "noise"}).to_csv(
        tmp_path / "labels.csv", index=False)

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "unitrefine.merge_review", *args], cwd=tmp_path,
                              capture_output=True, text=True, check=False, timeout=300)

    proc = command("predictions=predictions.csv", "review=labels.csv", "output=out/final.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "The curator reviewed 10 of 50 units" in proc.stderr and "10 of the 10 queued units" in proc.stderr
    assert (pd.read_csv(tmp_path / "out" / "final.csv")["label_source"] == "curator").sum() == 10
    proc = command("predictions=predictions.csv", "review=labels.csv", "output=labels.csv", "overwrite=true")
    assert proc.returncode == 2 and "is an input" in proc.stderr and "Traceback" not in proc.stderr
