"""Synthetic analyzers (:mod:`unitrefine.data.synthetic`): labels with signal, seeded, cached, and the whole
experiment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_GENERATE

from unitrefine.config import GenerateConfig, compose_config, validate_config
from unitrefine.data.synthetic import MANIFEST, check_generate, ensure_recordings, make_units
from unitrefine.errors import UnitRefineError

TINY = GenerateConfig(**TINY_GENERATE)


def test_units_are_made_from_the_ground_truth_with_known_labels() -> None:
    recording, sorting, labels = make_units(TINY, [3])
    assert labels.value_counts().to_dict() == {"good": 5, "noise": 3, "mua": 2}
    assert sorted(labels.index, key=int) == [str(u) for u in sorted(int(u) for u in sorting.unit_ids)]
    assert recording.get_num_channels() == 8 and recording.get_total_duration() == 60.0
    counts = {u: len(sorting.get_unit_spike_train(u)) for u in sorting.unit_ids}
    by_label = {lab: [counts[int(u)] for u in labels.index[labels == lab]] for lab in ("good", "mua", "noise")}
    assert min(by_label["mua"]) > max(by_label["good"])  # merged or contaminated: more spikes than one neuron
    # Seeded: the same seed gives the same sorting, another seed another one.
    _, again, labels_again = make_units(TINY, [3])
    assert labels_again.equals(labels)
    assert all(np.array_equal(again.get_unit_spike_train(u), sorting.get_unit_spike_train(u)) for u in sorting.unit_ids)
    _, other, _ = make_units(TINY, [4])
    assert not np.array_equal(other.get_unit_spike_train(0), sorting.get_unit_spike_train(0))


def test_impossible_settings_are_refused() -> None:
    with pytest.raises(UnitRefineError, match=r"num_units=3 is too few"):
        check_generate(GenerateConfig(num_units=3, n_merged=1, n_contaminated=1))


def _dataset(tmp_path: Path, n: int = 1):
    cfg = validate_config(compose_config(["+experiment=synthetic_v1", f"root={tmp_path}"]))
    cfg.dataset.generate = TINY
    cfg.dataset.recordings = cfg.dataset.recordings[:n]
    return cfg


def test_recordings_are_generated_once_and_again_only_when_settings_change(tmp_path: Path) -> None:
    cfg = _dataset(tmp_path)
    wanted = {"quality_metrics": ["snr"], "template_metrics": []}
    assert ensure_recordings(cfg.dataset, cfg.root_dir, wanted) == ["syn0"]
    folder = tmp_path / "experiments" / "synthetic_v1" / "data" / "syn0"
    assert sorted(p.name for p in folder.iterdir()) == ["analyzer", "cluster_group.tsv", MANIFEST]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["extensions"]["random_spikes"]["seed"] == 0 and "noise_levels" in manifest["extensions"]
    assert ensure_recordings(cfg.dataset, cfg.root_dir, wanted) == []  # cached
    cfg.dataset.generate = GenerateConfig(**{**TINY_GENERATE, "n_noise": 2})
    assert ensure_recordings(cfg.dataset, cfg.root_dir, wanted) == ["syn0"]  # settings changed
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_a_folder_not_made_by_the_generator_is_never_overwritten(tmp_path: Path) -> None:
    cfg = _dataset(tmp_path)
    folder = tmp_path / "experiments" / "synthetic_v1" / "data" / "syn0"
    folder.mkdir(parents=True)
    (folder / "precious.txt").write_text("mine")
    with pytest.raises(UnitRefineError, match=r"was not made by unitrefine's synthetic-data generator"):
        ensure_recordings(cfg.dataset, cfg.root_dir, {"quality_metrics": ["snr"]})
    assert (folder / "precious.txt").read_text() == "mine"


@pytest.mark.slow
def test_synthetic_v1_from_scratch_beats_090_and_spikeinterface_applies_its_model(tmp_path: Path) -> None:
    """The issue's acceptance run: generated data, the real engine, held-out balanced accuracy > 0.9 (~2 min)."""
    import pandas as pd
    from spikeinterface.core import load_sorting_analyzer
    from spikeinterface.curation import model_based_label_units

    from unitrefine.data.synthetic import write_recording
    from unitrefine.search.estimators import TRUSTED_TYPES

    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "unitrefine.train", "+experiment=synthetic_v1", f"root={tmp_path}",
         f"tracking.uri=sqlite:///{out}/mlflow.db", f"tracking.artifact_location={out.as_uri()}/artifacts",
         f"output.folder={out}/model"],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "model" / "model_info.json").read_text())
    assert info["holdout"]["balanced_accuracy"] > 0.9
    # A fresh recording (another seed), its metrics computed by unitrefine.predict with the model's parameters:
    gen = GenerateConfig()
    recording, sorting, labels = make_units(gen, [12345])
    folder = write_recording(tmp_path / "fresh", "analyzer", "cluster_group.tsv", recording, sorting, labels,
                             ["random_spikes", "templates", "noise_levels", "spike_amplitudes"], {})
    proc = subprocess.run(
        [sys.executable, "-m", "unitrefine.predict", f"model={out}/model", f"data={folder}/analyzer",
         f"output={tmp_path}/predictions.csv"], cwd=tmp_path, capture_output=True, text=True, check=False, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = pd.read_csv(tmp_path / "predictions.csv", dtype={"unit_id": str})
    si = model_based_label_units(load_sorting_analyzer(folder / "analyzer"), model_folder=out / "model",
                                 trusted=list(TRUSTED_TYPES), enforce_metric_params=True)
    assert list(si["prediction"]) == list(ours["predicted_label"])
    assert (ours["predicted_label"].to_numpy() == labels.reindex(ours["unit_id"]).to_numpy()).mean() > 0.85
