"""Applying models (:mod:`unitrefine.apply.prediction`, :mod:`unitrefine.apply.predict_io`,
:mod:`unitrefine.tracking.registry`).

Real SpikeInterface, skops and MLflow throughout; SpikeInterface's own functions are the reference.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_QUALITY, TINY_TEMPLATE, copy_recordings, make_config, snapshot
from conftest import read_predictions as read
from conftest import run_predict as run
from spikeinterface.core import load_sorting_analyzer
from spikeinterface.curation import model_based_label_units

from unitrefine.apply.prediction import parse_predict_config
from unitrefine.data import analyzers as az
from unitrefine.data import si_metrics as sm
from unitrefine.errors import UnitRefineError
from unitrefine.search.estimators import TRUSTED_TYPES


def test_analyzer_predictions_match_spikeinterface_with_enforced_metric_params(
    tmp_path: Path, synthetic_bank: Path, synthetic_models: dict[str, Path]
) -> None:
    """A fresh analyzer without metrics: predict computes them with the model's parameters and saves them, so
    SpikeInterface's model_based_label_units(enforce_metric_params=True) accepts it and agrees exactly."""
    folder = copy_recordings(synthetic_bank, tmp_path, [4])[0]
    (folder / "params.py").write_text("dat_path = 'recording.dat'\n")  # a Phy folder
    model = synthetic_models["three_class"]
    run(model=model, data=folder / "analyzer", output=tmp_path / "pred.csv", phy_folder=folder)
    ours = read(tmp_path / "pred.csv")
    assert list(ours.columns) == ["recording", "unit_id", "predicted_label", "confidence",
                                  "probability_good", "probability_mua", "probability_noise"]
    np.testing.assert_allclose(ours[["probability_good", "probability_mua", "probability_noise"]].sum(axis=1), 1.0)
    analyzer = load_sorting_analyzer(folder / "analyzer")  # from disk: metrics and properties were saved
    qm = analyzer.get_extension("quality_metrics").params["metric_params"]
    assert qm["presence_ratio"]["bin_duration_s"] == 10  # the model's parameter, not SpikeInterface's default
    assert list(analyzer.get_sorting_property("classifier_label")) == list(ours["predicted_label"])
    np.testing.assert_allclose(analyzer.get_sorting_property("classifier_probability"), ours["confidence"])
    si = model_based_label_units(analyzer, model_folder=model, trusted=list(TRUSTED_TYPES), enforce_metric_params=True,
                                 set_predictions_as_properties=False)
    assert list(si["prediction"]) == list(ours["predicted_label"])
    np.testing.assert_allclose(si["probability"].to_numpy(dtype=float), ours["confidence"], rtol=1e-12)
    truth = pd.read_csv(folder / "cluster_group.tsv", sep="\t", dtype=str).set_index("cluster_id")["group"]
    assert (ours["predicted_label"].to_numpy() == truth.reindex(ours["unit_id"]).to_numpy()).mean() >= 0.7
    phy = pd.read_csv(folder / "cluster_unitrefine_label.tsv", sep="\t", dtype={"cluster_id": str})
    assert list(phy.columns) == ["cluster_id", "unitrefine_label"]
    assert dict(zip(phy["cluster_id"], phy["unitrefine_label"])) == dict(zip(ours["unit_id"], ours["predicted_label"]))
    probability = pd.read_csv(folder / "cluster_unitrefine_probability.tsv", sep="\t", dtype={"cluster_id": str})
    assert list(probability.columns) == ["cluster_id", "unitrefine_probability"]
    assert probability["cluster_id"].tolist() == ours["unit_id"].tolist()
    np.testing.assert_allclose(probability["unitrefine_probability"], ours["confidence"], atol=5e-5)  # 4 decimals


def test_metrics_computed_with_other_parameters_warn_or_fail_when_strict(
    tmp_path: Path, synthetic_bank: Path, synthetic_models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    folder = copy_recordings(synthetic_bank, tmp_path, [5])[0]
    analyzer = load_sorting_analyzer(folder / "analyzer")
    analyzer.compute("quality_metrics", metric_names=["presence_ratio"],
                     metric_params={"presence_ratio": {"bin_duration_s": 30}})
    model = synthetic_models["three_class"]
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError, match=r"other parameters than model .*presence_ratio.*strict=true"):
        run(model=model, data=folder / "analyzer", output=tmp_path / "pred.csv", strict=True)
    assert snapshot(tmp_path) == before, "the refusal comes before anything is computed or written"
    stored = load_sorting_analyzer(folder / "analyzer").get_extension("quality_metrics").params["metric_params"]
    assert stored["presence_ratio"]["bin_duration_s"] == 30
    with caplog.at_level(logging.WARNING):
        run(model=model, data=folder / "analyzer", output=tmp_path / "pred.csv")
    assert "presence_ratio" in caplog.text and '"bin_duration_s": 30' in caplog.text
    # SpikeInterface's own check agrees (it raises a bare Exception).
    with pytest.raises(Exception, match="quality_metric params for presence_ratio do not match those used to train"):
        model_based_label_units(load_sorting_analyzer(folder / "analyzer"), model_folder=model,
                                trusted=list(TRUSTED_TYPES), enforce_metric_params=True)


def _analyzer_metrics_csv(folder: Path, path: Path) -> pd.DataFrame:
    metrics = load_sorting_analyzer(folder / "analyzer").get_metrics_extension_data()
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics.to_csv(path, index_label="cluster_id")
    return metrics


def test_csv_input_old_metric_names_and_extra_columns(tmp_path: Path, synthetic_bank: Path, synthetic_models) -> None:
    folder = copy_recordings(synthetic_bank, tmp_path, [4])[0]
    model = synthetic_models["three_class"]
    run(model=model, data=folder / "analyzer", output=tmp_path / "from_analyzer.csv", set_properties=False)
    metrics = _analyzer_metrics_csv(folder, tmp_path / "csvs" / "rec_a.csv")
    # Old SpikeInterface names (mapped as in training) and a text column the model does not use (ignored):
    metrics.rename(columns={"peak_to_trough_duration": "peak_to_valley", "trough_half_width": "half_width"}).assign(
        notes="looks fine").to_csv(tmp_path / "csvs" / "rec_a.csv", index_label="cluster_id")
    run(model=model, data=tmp_path / "csvs" / "rec_a.csv", output=tmp_path / "from_csv.csv")
    expected, got = read(tmp_path / "from_analyzer.csv"), read(tmp_path / "from_csv.csv")
    pd.testing.assert_frame_equal(got.drop(columns="recording"), expected.drop(columns="recording"))
    # A folder of CSVs: one recording per file, named by the file.
    metrics.to_csv(tmp_path / "csvs" / "rec_b.csv", index_label="cluster_id")
    run(model=model, data=tmp_path / "csvs", output=tmp_path / "folder.csv")
    both = read(tmp_path / "folder.csv")
    assert list(dict.fromkeys(both["recording"])) == ["rec_a", "rec_b"]
    assert list(both["predicted_label"]) == 2 * list(expected["predicted_label"])


def test_missing_required_metrics_are_listed_with_how_to_compute_them(tmp_path: Path, synthetic_bank: Path,
                                                                      synthetic_models) -> None:
    folder = copy_recordings(synthetic_bank, tmp_path, [4])[0]
    model = synthetic_models["three_class"]
    run(model=model, data=folder / "analyzer", output=tmp_path / "full.csv", set_properties=False)
    metrics = _analyzer_metrics_csv(folder, tmp_path / "m.csv").drop(columns=["snr", "peak_to_trough_duration"])
    metrics.to_csv(tmp_path / "m.csv", index_label="cluster_id")
    message = _refused(tmp_path, model=model, data=tmp_path / "m.csv", output=tmp_path / "pred.csv")
    assert f"{tmp_path / 'm.csv'} lacks metrics ['snr', 'peak_to_trough_duration']" in message
    assert "analyzer.compute('quality_metrics', metric_names=['snr'])" in message
    assert "analyzer.compute('template_metrics', metric_names=['peak_to_trough_duration'])" in message
    assert "impute_missing=[snr,peak_to_trough_duration]" in message
    run(model=model, data=tmp_path / "m.csv", output=tmp_path / "pred.csv",
        impute_missing=["snr", "peak_to_trough_duration"])
    imputed, full = read(tmp_path / "pred.csv"), read(tmp_path / "full.csv")
    assert imputed["unit_id"].tolist() == full["unit_id"].tolist()
    probabilities = imputed[["probability_good", "probability_mua", "probability_noise"]]
    assert probabilities.notna().all().all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_a_model_folder_from_spikeinterface_train_model_gives_identical_predictions(tmp_path: Path,
                                                                                    synthetic_bank: Path) -> None:
    from spikeinterface.curation import train_model

    folders = copy_recordings(synthetic_bank, tmp_path, [0, 1, 4])
    analyzers, labels = [], []
    for folder in folders:
        analyzer = az.open_analyzer(folder / "analyzer")
        az.ensure_metrics(analyzer, {sm.QUALITY: TINY_QUALITY, sm.TEMPLATE: TINY_TEMPLATE}, {}, extensions={},
                          n_jobs=1, save=True, recompute=False, where=str(folder))
        truth = pd.read_csv(folder / "cluster_group.tsv", sep="\t", dtype=str).set_index("cluster_id")["group"]
        analyzers.append(analyzer)
        labels.append([truth[str(u)] for u in analyzer.unit_ids])
    si_folder = tmp_path / "si_model"
    train_model(mode="analyzers", analyzers=analyzers[:2], labels=labels[:2], folder=si_folder,
                imputation_strategies=["median"], scaling_techniques=["standard_scaler"],
                classifiers={"RandomForestClassifier": {"n_estimators": [20], "max_depth": [3]}},
                search_kwargs={"n_iter": 1, "cv": 2}, seed=0, verbose=False)
    run(model=si_folder, data=folders[2] / "analyzer", output=tmp_path / "pred.csv", set_properties=False)
    ours = read(tmp_path / "pred.csv")
    si = model_based_label_units(load_sorting_analyzer(folders[2] / "analyzer"), model_folder=si_folder,
                                 trusted=list(TRUSTED_TYPES), set_predictions_as_properties=False)
    assert list(si["prediction"]) == list(ours["predicted_label"])
    np.testing.assert_allclose(si["probability"].to_numpy(dtype=float), ours["confidence"], rtol=1e-12)


def test_two_models_make_the_cascade_of_spikeinterface_unitrefine_label_units(
    tmp_path: Path, synthetic_bank: Path, synthetic_models: dict[str, Path]
) -> None:
    from spikeinterface.curation import unitrefine_label_units

    folder = copy_recordings(synthetic_bank, tmp_path, [4])[0]
    first, second = synthetic_models["noise_vs_neural"], synthetic_models["sua_vs_mua"]
    run(model=[first, second], data=folder / "analyzer", output=tmp_path / "pred.csv", set_properties=False)
    ours = read(tmp_path / "pred.csv")
    assert set(ours["predicted_label"]) <= {"noise", "sua", "mua"} and "noise" in set(ours["predicted_label"])
    noise = ours["predicted_label"] == "noise"
    assert ours.loc[noise, ["probability_mua", "probability_sua"]].isna().all().all()
    assert ours.loc[~noise, ["probability_mua", "probability_sua"]].notna().all().all()
    si = unitrefine_label_units(load_sorting_analyzer(folder / "analyzer"), noise_neural_classifier=str(first),
                                sua_mua_classifier=str(second))
    assert list(si["unitrefine_label"]) == list(ours["predicted_label"])
    np.testing.assert_allclose(si["unitrefine_probability"].to_numpy(dtype=float), ours["confidence"], rtol=1e-12)
    with pytest.raises(UnitRefineError, match=r"first model .* without 'noise'"):
        run(model=[second, first], data=folder / "analyzer", output=tmp_path / "x.csv")


def test_models_with_unreviewed_types_are_refused_unless_trusted_explicitly(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline

    from unitrefine.export.folder import dump_model, write_json

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"snr": rng.uniform(1, 20, 40), "firing_rate": rng.uniform(0.1, 30, 40)})
    y = (X["snr"] > 8).astype(int)
    folder = tmp_path / "model"
    folder.mkdir()
    # A ball tree is not on the reviewed list (a KD tree is).
    path = dump_model(Pipeline([("clf", KNeighborsClassifier(n_neighbors=3, algorithm="ball_tree"))]).fit(X, y), folder)
    write_json(folder / "model_info.json", {"metric_params": {}, "requirements": {"spikeinterface": "0.105.3"},
                                            "label_conversion": {"0": "other", "1": "good"}})
    X.to_csv(tmp_path / "m.csv", index_label="unit_id")
    untrusted = sorted(set(sio.get_untrusted_types(file=path)) - set(TRUSTED_TYPES))
    assert untrusted == ["sklearn.neighbors._ball_tree.BallTree"]
    message = _refused(tmp_path, model=folder, data=tmp_path / "m.csv", output=tmp_path / "pred.csv")
    assert "sklearn.neighbors._ball_tree.BallTree" in message and "trust=[" in message
    run(model=folder, data=tmp_path / "m.csv", output=tmp_path / "pred.csv", trust=untrusted)
    assert read(tmp_path / "pred.csv")["predicted_label"].tolist() == ["good" if v else "other" for v in y]


def test_registered_models_are_loaded_by_alias_or_version(tmp_path: Path, tiny_recordings) -> None:
    from unitrefine.run.training import train

    result = train(make_config(tmp_path, tiny_recordings, ["search.n_trials=1", "cv.holdout_recordings=[]"]))
    data = tiny_recordings[0]["metrics"]
    run(model=result.model_folder, data=data, output=tmp_path / "folder.csv")
    for spec in ("models:/smoke@challenger", "models:/smoke/1"):
        run(model=spec, tracking_uri=result.tracking_uri, data=data, output=tmp_path / "registry.csv", overwrite=True)
        pd.testing.assert_frame_equal(read(tmp_path / "registry.csv"), read(tmp_path / "folder.csv"))
    for spec, message in (("models:/smoke@champion", "is not in the registry"),
                          ("models:/smoke", "not a registered-model URI")):
        with pytest.raises(UnitRefineError, match=message):
            run(model=spec, tracking_uri=result.tracking_uri, data=data, output=tmp_path / "x.csv")
    with pytest.raises(UnitRefineError, match="No MLflow store"):
        run(model="models:/smoke@challenger", tracking_uri=f"sqlite:///{tmp_path}/none.db", data=data,
            output=tmp_path / "x.csv")


def test_outputs_and_inputs_are_checked_before_any_work(tmp_path: Path, tiny_recordings, synthetic_models) -> None:
    model, data = synthetic_models["three_class"], tiny_recordings[0]["metrics"]
    (tmp_path / "pred.csv").write_text("keep me")
    with pytest.raises(UnitRefineError, match="already exist.*overwrite=true"):
        run(model=model, data=data, output=tmp_path / "pred.csv")
    assert (tmp_path / "pred.csv").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out.csv"
    message = _refused(tmp_path, model=model, data=tmp_path / "nope.csv", output=out)
    assert message.startswith(f"The data {tmp_path / 'nope.csv'} does not exist.")
    message = _refused(tmp_path, model=model, data=tmp_path / "empty", output=out)
    assert str(tmp_path / "empty") in message and "holds no metrics tables" in message
    message = _refused(tmp_path, model=tmp_path / "no_model", data=data, output=out)
    assert message == f"Model folder {tmp_path / 'no_model'} does not exist."
    message = _refused(tmp_path, model=model, data=data, output=out, phy_folder=tmp_path / "no_phy")
    assert message == f"The Phy folder {tmp_path / 'no_phy'} does not exist (phy_folder)."


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"data": "x.csv", "output": "y.csv"}, r"Set model=\.\.\."),
        ({"model": ["a", "b", "c"], "data": "x", "output": "y"}, "one model, or two for the cascade"),
        ({"model": "a", "data": "x", "output": "y", "thrust": ["t"]},
         r"Unknown predict option\(s\): thrust \(did you mean trust\?\)"),
    ],
)
def test_bad_options_are_clear_errors(options: dict, message: str) -> None:
    with pytest.raises(UnitRefineError, match=message):
        parse_predict_config(options)


# --------------------------------------------------------------------------------------------------
# File errors: each names the file and what to do, before any work; nothing written, no user file changed
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny three-class model folder and one recording's metrics CSV, under tmp_path."""
    from _tiny_models import fit_model, write_unlabelled

    model = fit_model(tmp_path / "model", "three_class")
    data = write_unlabelled(tmp_path / "new", {"recA": (20, 11)}) / "recA.csv"
    return model, data


def _refused(root: Path, **options) -> str:
    """Run predict with ``options``; it must fail with a UnitRefineError and leave ``root`` as it was."""
    before = snapshot(root)
    with pytest.raises(UnitRefineError) as excinfo:
        run(**options)
    assert snapshot(root) == before
    return str(excinfo.value)


def test_output_that_is_a_folder_is_refused_even_with_overwrite(tmp_path: Path, tiny) -> None:
    model, data = tiny
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "old.csv").write_text("keep me\n")
    for overwrite in (False, True):
        message = _refused(tmp_path, model=model, data=data, output=tmp_path / "results", overwrite=overwrite)
        assert f"output={tmp_path / 'results'} is a folder, not a file" in message
        assert f"output={tmp_path / 'results' / 'predictions.csv'}" in message


def test_output_in_a_folder_that_cannot_be_made_is_refused(tmp_path: Path, tiny) -> None:
    """A path under an existing file (chmod does not stop root, a file in the way stops everyone)."""
    model, data = tiny
    (tmp_path / "report.txt").write_text("a file\n")
    for output in (tmp_path / "report.txt" / "p.csv", tmp_path / "report.txt" / "sub" / "p.csv"):
        message = _refused(tmp_path, model=model, data=data, output=output)
        assert f"output={output} cannot be written: {tmp_path / 'report.txt'} is a file, not a folder" in message


def test_output_that_is_an_input_is_refused_and_the_input_kept(tmp_path: Path, tiny) -> None:
    model, data = tiny
    message = _refused(tmp_path, model=model, data=data, output=data, overwrite=True)
    assert f"output={data} is an input of this command" in message and "never overwritten" in message
    message = _refused(tmp_path, model=model, data=data.parent, output=data, overwrite=True)  # a folder of tables
    assert f"output={data} is an input" in message
    message = _refused(tmp_path, model=model, data=data, output=model / "preds.csv")
    assert f"output={model / 'preds.csv'} is inside {model}, an input of this command" in message
    phy = tmp_path / "phy"
    phy.mkdir()
    (phy / "cluster_group.tsv").write_text("cluster_id\tgroup\n1\tgood\n")
    for output in (phy / "cluster_group.tsv", phy / "cluster_unitrefine_label.tsv"):
        message = _refused(tmp_path, model=model, data=data, output=output, phy_folder=phy, overwrite=True)
        assert f"output={output} is an input of this command" in message


def test_model_may_be_given_as_its_model_file(tmp_path: Path, tiny) -> None:
    model, data = tiny
    run(model=model, data=data, output=tmp_path / "by_folder.csv")
    run(model=model / "best_model.skops", data=data, output=tmp_path / "by_file.csv")
    pd.testing.assert_frame_equal(read(tmp_path / "by_file.csv"), read(tmp_path / "by_folder.csv"))


def test_a_write_that_fails_leaves_nothing_and_names_the_file(tmp_path: Path) -> None:
    """Past the checks (a folder replaced by a file meanwhile): one clear error, no temporary file, no chain."""
    from unitrefine.apply.predict_io import write_predictions

    (tmp_path / "gone").write_text("now a file\n")
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError) as excinfo:
        write_predictions(pd.DataFrame({"unit_id": [1]}), tmp_path / "gone" / "p.csv")
    assert f"Could not write {tmp_path / 'gone' / 'p.csv'}" in str(excinfo.value)
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__
    assert snapshot(tmp_path) == before


def test_relative_paths_are_found_from_the_working_directory_then_the_project(
    tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data= from the project (the README's example file) when it is not in the working directory; model= and
    output= from the working directory; neither: both places named."""
    from unitrefine.config import PROJECT_ROOT

    monkeypatch.chdir(tmp_path)
    example = "experiments/tutorial/data/new_data.csv"
    result = run(model="model", data=example, output="out/p.csv")
    assert result.output == tmp_path / "out" / "p.csv" and len(read(result.output)) == 50
    assert set(read(result.output)["recording"]) == {"new_data"}
    (tmp_path / example).parent.mkdir(parents=True)
    (tmp_path / "new" / "recA.csv").rename(tmp_path / example)  # now in the working directory: that one is used
    assert len(read(run(model="model", data=example, output="q.csv").output)) == 20
    message = _refused(tmp_path, model="model", data="experiments/none.csv", output="r.csv")
    assert (f"data=experiments/none.csv does not exist: looked in the working directory "
            f"({tmp_path / 'experiments' / 'none.csv'}) and in the project "
            f"({PROJECT_ROOT / 'experiments' / 'none.csv'})" in message)
    message = _refused(tmp_path, model="no_model", data=example, output="r.csv")
    assert f"model=no_model does not exist: looked in the working directory ({tmp_path / 'no_model'})" in message
