"""What to label next (:mod:`unitrefine.apply.active`): scores, ranking, spreading, labelled units, bad input.

A tiny real model (a scikit-learn pipeline saved with skops, loaded with the reviewed trusted types) on
seeded tables; its probabilities are checked against ``unitrefine.predict``'s, so suggest reuses that path.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import copy_recordings, snapshot, write_recording
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from spikeinterface.core import load_sorting_analyzer

from unitrefine.apply.active import (
    centre_on_threshold,
    decision_threshold,
    parse_suggest_config,
    rank_candidates,
    select,
    suggest,
    uncertainty,
)
from unitrefine.apply.prediction import parse_predict_config, predict
from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import INFO_FILE, dump_model, write_json
from unitrefine.model.threshold import with_threshold

CLASSES = ["good", "mua", "noise"]


def _metrics(csv: str) -> pd.DataFrame:
    return pd.read_csv(csv).rename(columns={"peak_to_valley": "peak_to_trough_duration"})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-class model folder fitted on one seeded recording (overlapping classes: probabilities vary)."""
    tmp_path = tmp_path_factory.mktemp("tiny_model")
    files = write_recording(tmp_path / "train", n_units=120, seed=5, spread=2.5)
    X = _metrics(files["metrics"]).drop(columns="cluster_id")
    y = pd.read_csv(files["labels"], sep="\t")["group"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    model = Pipeline([("imputer", SimpleImputer(strategy="median")), ("scaler", StandardScaler()),
                      ("classifier", LogisticRegression(max_iter=2000))])
    model.fit(X.astype("float32"), y)
    folder = tmp_path / "model"
    folder.mkdir()
    dump_model(model, folder)
    write_json(folder / INFO_FILE, {"label_conversion": {str(i): c for i, c in enumerate(CLASSES)},
                                    "requirements": {"spikeinterface": "0.105.3"}, "metric_params": {}})
    return folder


@pytest.fixture
def unlabelled(tmp_path: Path) -> Path:
    """A folder of two recordings' metrics tables (recA: 30 units, recB: 20), without labels."""
    folder = tmp_path / "new"
    for name, n, seed in (("recA", 30, 11), ("recB", 20, 12)):
        files = write_recording(tmp_path / "raw" / name, n_units=n, seed=seed, spread=2.5)
        folder.mkdir(exist_ok=True)
        pd.read_csv(files["metrics"]).to_csv(folder / f"{name}.csv", index=False)
    return folder


def _plain(v: Any) -> Any:
    return str(v) if isinstance(v, Path) else v


def run(**options: Any):
    return suggest(parse_suggest_config({k: _plain(v) for k, v in options.items()}))


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"unit_id": str, "recording": str})


# ------------------------------------------------------------------------------------------------------------
# Scores and ranking
# ------------------------------------------------------------------------------------------------------------


def test_uncertainty_strategies_give_their_formulas_and_different_orders() -> None:
    proba = np.array([[0.45, 0.45, 0.10],   # on a two-class boundary
                      [0.50, 0.25, 0.25],   # unsure among all three
                      [0.90, 0.05, 0.05]])  # sure
    np.testing.assert_allclose(uncertainty(proba, "margin"), [1.0, 0.75, 0.15])
    np.testing.assert_allclose(uncertainty(proba, "least_confidence"), [0.55, 0.5, 0.1])
    h = -(proba * np.log(proba)).sum(axis=1) / np.log(3)
    np.testing.assert_allclose(uncertainty(proba, "entropy"), h)
    assert h[1] > h[0]  # entropy puts the three-way doubt first; margin and least confidence the boundary
    assert uncertainty(np.array([[1.0, 0.0, 0.0]]), "entropy")[0] == 0.0  # 0 log 0 = 0, no NaN
    binary = np.random.default_rng(0).dirichlet([1, 1], size=50)
    orders = {s: np.argsort(-uncertainty(binary, s), kind="stable") for s in ("margin", "least_confidence", "entropy")}
    assert (orders["margin"] == orders["least_confidence"]).all() and (orders["margin"] == orders["entropy"]).all()
    with pytest.raises(ValueError, match="unknown strategy"):
        uncertainty(proba, "random")


def test_round_robin_spreads_over_recordings_and_none_ranks_globally() -> None:
    recordings = np.array(["A", "A", "A", "A", "B", "B", "C"])
    scores = np.array([0.90, 0.95, 0.80, 0.85, 0.30, 0.40, 0.10])
    # Round 1: the best of each recording, most uncertain first (A's 0.95, B's 0.40, C's 0.10); round 2: ...
    assert select(recordings, scores, 7, "round_robin").tolist() == [1, 5, 6, 0, 4, 3, 2]
    assert select(recordings, scores, 3, "round_robin").tolist() == [1, 5, 6]
    assert select(recordings, scores, 3, "none").tolist() == [1, 0, 3]
    assert select(recordings, scores, 100, "none").tolist() == [1, 0, 3, 2, 5, 4, 6]
    # Ties keep the recordings' and units' order.
    ranked = select(np.array(["B", "A", "B", "A"]), np.array([0.5, 0.5, 0.5, 0.5]), 4, "round_robin")
    assert ranked.tolist() == [0, 1, 2, 3]


def test_rank_candidates_table() -> None:
    predictions = pd.DataFrame({
        "recording": ["A", "A", "B"], "unit_id": ["1", "2", "7"], "predicted_label": ["good", "mua", "good"],
        "confidence": [0.9, 0.6, 0.5], "probability_good": [0.9, 0.4, 0.5], "probability_mua": [0.1, 0.6, 0.5],
    })
    out = rank_candidates(predictions, ["good", "mua"], n=2)
    assert list(out.columns) == ["recording", "unit_id", "rank", "score", "predicted_label", "probability_good",
                                 "probability_mua"]
    assert out["unit_id"].tolist() == ["7", "2"] and out["rank"].tolist() == [1, 2]
    np.testing.assert_allclose(out["score"], [1.0, 0.8])


# ------------------------------------------------------------------------------------------------------------
# suggest() on a real model
# ------------------------------------------------------------------------------------------------------------


def test_suggest_ranks_by_the_models_own_probabilities(tmp_path: Path, tiny_model: Path, unlabelled: Path) -> None:
    predict(parse_predict_config({"model": str(tiny_model), "data": str(unlabelled),
                                  "output": str(tmp_path / "p.csv")}))
    preds = read(tmp_path / "p.csv")
    result = run(model=tiny_model, data=unlabelled, n=10, output=tmp_path / "s.csv")
    got = read(tmp_path / "s.csv")
    assert list(got.columns) == ["recording", "unit_id", "rank", "score", "predicted_label",
                                 *[f"probability_{c}" for c in CLASSES]]
    assert got["rank"].tolist() == list(range(1, 11)) and result.n_candidates == 50
    # Same probabilities and labels as unitrefine.predict, and the score is the margin of those probabilities.
    merged = got.merge(preds, on=["recording", "unit_id"], suffixes=("", "_p"))
    assert len(merged) == 10 and (merged["predicted_label"] == merged["predicted_label_p"]).all()
    for c in CLASSES:
        np.testing.assert_allclose(merged[f"probability_{c}"], merged[f"probability_{c}_p"])
    p = np.sort(preds[[f"probability_{c}" for c in CLASSES]].to_numpy(), axis=1)
    margin = 1 - (p[:, -1] - p[:, -2])
    # Round-robin over the two recordings: every round (two ranks) holds one unit of each, the more uncertain
    # first; each recording's suggestions are its own most uncertain units, in order.
    for r in range(5):
        pair = got.iloc[2 * r: 2 * r + 2]
        assert set(pair["recording"]) == {"recA", "recB"} and pair["score"].iloc[0] >= pair["score"].iloc[1]
    for rec in ("recA", "recB"):
        mine = got[got["recording"] == rec]["score"].to_numpy()
        assert (np.diff(mine) <= 0).all()
        pool = np.sort(margin[(preds["recording"] == rec).to_numpy()])[::-1]
        np.testing.assert_allclose(mine, pool[:5])
    assert got["score"].iloc[0] == pytest.approx(margin.max())
    # Global ranking with spread=none: the 10 most uncertain units overall.
    run(model=tiny_model, data=unlabelled, n=10, output=tmp_path / "g.csv", spread="none")
    np.testing.assert_allclose(read(tmp_path / "g.csv")["score"], np.sort(margin)[::-1][:10])


def test_centre_on_threshold_maps_the_threshold_to_one_half() -> None:
    p = np.array([0.0, 0.15, 0.3, 0.65, 1.0])
    q = centre_on_threshold(np.column_stack([1 - p, p]), 0.3)
    np.testing.assert_allclose(q[:, 1], [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(q.sum(axis=1), 1.0)


def test_a_thresholded_binary_model_is_most_uncertain_at_its_own_threshold(tmp_path: Path, unlabelled: Path) -> None:
    """A model exported with threshold.tune decides at P(good) >= t: the units nearest t come first, not those
    nearest 0.5 (the output keeps the model's own probabilities)."""
    files = write_recording(tmp_path / "train", n_units=120, seed=5, spread=2.5)
    X = _metrics(files["metrics"]).drop(columns="cluster_id").astype("float32")
    y = (pd.read_csv(files["labels"], sep="\t")["group"] == "good").astype(int).to_numpy()
    base = Pipeline([("imputer", SimpleImputer(strategy="median")), ("scaler", StandardScaler()),
                     ("classifier", LogisticRegression(max_iter=2000))]).fit(X, y)
    assert decision_threshold(base) is None
    t = 0.3
    model = with_threshold(base, t, X, y)
    assert decision_threshold(model) == pytest.approx(t)
    folder = tmp_path / "thresholded"
    folder.mkdir()
    dump_model(model, folder)
    write_json(folder / INFO_FILE, {"label_conversion": {"0": "other", "1": "good"},
                                    "requirements": {"spikeinterface": "0.105.3"}, "metric_params": {}})
    got = run(model=folder, data=unlabelled, n=50, spread="none", output=tmp_path / "s.csv").suggestions
    p = got["probability_good"].to_numpy()
    q = np.where(p < t, p / (2 * t), 0.5 + 0.5 * (p - t) / (1 - t))
    np.testing.assert_allclose(got["score"], 1 - np.abs(2 * q - 1))
    assert (np.diff(got["score"]) <= 1e-12).all()
    assert ((got["predicted_label"] == "good") == (p >= t)).all()
    assert not np.allclose(got["score"], 1 - np.abs(2 * p - 1))  # not the distance from 0.5


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path, tiny_model: Path, unlabelled: Path) -> None:
    out = tmp_path / "s.csv"
    out.write_text("keep me\n")
    with pytest.raises(UnitRefineError, match="overwrite=true"):
        run(model=tiny_model, data=unlabelled, output=out)
    assert out.read_text() == "keep me\n"
    run(model=tiny_model, data=unlabelled, output=out, overwrite=True, n=3, strategy="entropy")
    assert len(read(out)) == 3
    assert not [p.name for p in tmp_path.iterdir() if ".partial" in p.name]


def test_labelled_units_are_never_suggested(tmp_path: Path, tiny_model: Path, unlabelled: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    everything = run(model=tiny_model, data=unlabelled, n=50, output=tmp_path / "all.csv").suggestions
    top = everything.head(6)
    labels = tmp_path / "labels"
    (labels / "recB").mkdir(parents=True)
    a, b = top[top["recording"] == "recA"], top[top["recording"] == "recB"]
    # recA: a CSV of unit id + label, one of them unsorted (Phy's default: not a label); recB: a Phy TSV.
    pd.DataFrame({"unit_id": a["unit_id"], "label": ["good", "unsorted", "noise"]}).to_csv(labels / "recA.csv",
                                                                                          index=False)
    pd.DataFrame({"cluster_id": b["unit_id"], "group": "mua"}).to_csv(labels / "recB" / "cluster_group.tsv", sep="\t",
                                                                      index=False)
    result = run(model=tiny_model, data=unlabelled, n=50, output=tmp_path / "rest.csv", labels=labels)
    rest = read(tmp_path / "rest.csv")
    keys = set(zip(rest["recording"], rest["unit_id"]))
    unsorted = (a["recording"].iloc[1], a["unit_id"].iloc[1])
    assert unsorted in keys and result.n_labelled == 5 and len(rest) == 45
    assert not keys & {k for k in zip(top["recording"], top["unit_id"]) if k != unsorted}
    # One file with a recording column does the same.
    flat = pd.concat([a.assign(label="good"), b.assign(label="mua")])[["recording", "unit_id", "label"]]
    flat.to_csv(tmp_path / "flat.csv", index=False)
    with caplog.at_level(logging.WARNING):
        again = run(model=tiny_model, data=unlabelled, n=100, output=tmp_path / "flat_out.csv",
                    labels=tmp_path / "flat.csv")
    assert again.n_labelled == 6 and len(again.suggestions) == 44 and "only 44 units are unlabelled" in caplog.text


def _error(**options: Any) -> str:
    with pytest.raises(UnitRefineError) as excinfo:
        run(**options)
    return str(excinfo.value)


def _refused(root: Path, **options: Any) -> str:
    """The message suggest refuses ``options`` with; every file under ``root`` must be left as it was."""
    before = snapshot(root)
    message = _error(**options)
    assert snapshot(root) == before
    return message


def test_bad_labels_are_clear_errors_and_write_nothing(tmp_path: Path, tiny_model: Path, unlabelled: Path) -> None:
    out = tmp_path / "s.csv"
    common = {"model": tiny_model, "data": unlabelled, "output": out}
    pd.DataFrame({"cluster_id": [1, 3], "group": ["good", "mua"]}).to_csv(tmp_path / "one.tsv", sep="\t", index=False)
    message = _refused(tmp_path, **common, labels=tmp_path / "one.tsv")
    assert message.startswith(f"{tmp_path / 'one.tsv'} has no 'recording' column, but data= holds 2 recordings")
    pd.DataFrame({"recording": ["recA", "recZ"], "unit_id": [1, 3], "label": ["good", "mua"]}).to_csv(
        tmp_path / "z.csv", index=False)
    message = _refused(tmp_path, **common, labels=tmp_path / "z.csv")
    assert message.startswith(f"{tmp_path / 'z.csv'}: its 'recording' column names 'recZ', which data= does not hold")
    pd.DataFrame({"recording": ["recA", "recA"], "unit_id": [1, 999], "label": ["good", "mua"]}).to_csv(
        tmp_path / "far.csv", index=False)
    message = _refused(tmp_path, **common, labels=tmp_path / "far.csv")
    assert message.startswith(f"{tmp_path / 'far.csv'}: labels for units '999' of recording 'recA' that are not in "
                              "data=")
    message = _refused(tmp_path, **common, labels=tmp_path / "nope")
    assert message == f"The labels {tmp_path / 'nope'} (labels=) do not exist."
    (tmp_path / "empty_folder").mkdir()
    message = _refused(tmp_path, **common, labels=tmp_path / "empty_folder")
    assert message.startswith(f"{tmp_path / 'empty_folder'} holds no labels file for any recording of data= "
                              "('recA', 'recB')")
    ab = pd.DataFrame({"recording": "recA", "cluster_id": [1], "a": ["x"], "b": ["y"]})
    ab.to_csv(tmp_path / "ab.csv", index=False)
    message = _refused(tmp_path, **common, labels=tmp_path / "ab.csv")
    assert message.startswith(f"{tmp_path / 'ab.csv'}: cannot tell which column holds the labels among 'a', 'b'")


def test_a_single_recording_takes_a_plain_labels_file_and_everything_labelled_is_an_error(
    tmp_path: Path, tiny_model: Path, unlabelled: Path
) -> None:
    ids = pd.read_csv(unlabelled / "recB.csv")["cluster_id"]
    phy = pd.DataFrame({"cluster_id": ids[:-1], "group": "good"})
    phy.to_csv(tmp_path / "cluster_group.tsv", sep="\t", index=False)
    # labels= a Phy folder
    result = run(model=tiny_model, data=unlabelled / "recB.csv", output=tmp_path / "s.csv", labels=tmp_path)
    assert result.suggestions["unit_id"].tolist() == [str(ids.iloc[-1])]
    pd.DataFrame({"cluster_id": ids, "group": "good"}).to_csv(tmp_path / "cluster_group.tsv", sep="\t", index=False)
    message = _refused(tmp_path, model=tiny_model, data=unlabelled / "recB.csv", output=tmp_path / "t.csv",
                       labels=tmp_path / "cluster_group.tsv")
    assert message == (f"Every unit of {unlabelled / 'recB.csv'} is already labelled ({tmp_path / 'cluster_group.tsv'})"
                       ": nothing to suggest.")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"data": "d.csv", "output": "o.csv"}, "Set model=..."),
        ({"model": "m", "data": "d.csv", "output": "o.csv", "n": 0}, "n must be a whole number >= 1"),
        ({"model": "m", "data": "d.csv", "output": "o.csv", "strategy": "margn"}, "strategy must be one of margin"),
        ({"model": "m", "data": "d.csv", "output": "o.csv", "spread": "quota"}, "spread must be one of round_robin"),
        ({"model": ["a", "b"], "data": "d.csv", "output": "o.csv"}, "suggest takes one model"),
        ({"model": "m", "data": "d.csv", "output": "o.csv", "nn": 3},
         "Unknown suggest option(s): nn (did you mean n?)"),
    ],
)
def test_bad_options_are_clear_errors(options: dict, message: str) -> None:
    with pytest.raises(UnitRefineError) as excinfo:
        parse_suggest_config(options)
    assert message in str(excinfo.value)


def test_bad_data_and_models_are_the_prediction_paths_errors(tmp_path: Path, tiny_model: Path,
                                                             unlabelled: Path) -> None:
    out = tmp_path / "s.csv"
    message = _refused(tmp_path, model=tiny_model, data=tmp_path / "nope.csv", output=out)
    assert message.startswith(f"The data {tmp_path / 'nope.csv'} does not exist.")
    message = _refused(tmp_path, model=tmp_path / "no_model", data=unlabelled, output=out)
    assert message == f"Model folder {tmp_path / 'no_model'} does not exist."
    _metrics(str(unlabelled / "recA.csv")).drop(columns=["snr"]).to_csv(tmp_path / "lacks.csv", index=False)
    message = _refused(tmp_path, model=tiny_model, data=tmp_path / "lacks.csv", output=out)
    assert f"{tmp_path / 'lacks.csv'} lacks metrics ['snr']" in message


def test_suggest_on_an_analyzer_reads_only_and_computes_what_the_model_needs(
    tmp_path: Path, synthetic_bank: Path, synthetic_models: dict[str, Path]
) -> None:
    folder = copy_recordings(synthetic_bank, tmp_path, [4])[0]
    model = synthetic_models["three_class"]
    result = run(model=model, data=folder / "analyzer", n=4, output=tmp_path / "s.csv", save_metrics=False)
    got = read(tmp_path / "s.csv")
    assert len(got) == 4 and set(got["recording"]) == {"analyzer"} and result.n_candidates == 10
    assert [c for c in got.columns if c.startswith("probability_")] == [f"probability_{c}" for c in CLASSES]
    analyzer = load_sorting_analyzer(folder / "analyzer")
    assert not analyzer.has_extension("quality_metrics")  # save_metrics=false: the metrics were computed in memory
    assert "classifier_label" not in analyzer.sorting.get_property_keys()  # suggest sets no sorting properties
