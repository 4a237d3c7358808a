"""Shared fixtures: tiny seeded multi-recording datasets and configs composed like the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from omegaconf import DictConfig, OmegaConf

from unitrefine.config import TrainConfig, compose_config, validate_config

LABELS = np.array(["good", "mua", "noise"])


def write_recording(
    folder: Path, n_units: int, seed: int, id_header: str = "cluster_id", spread: float = 1.0
) -> dict[str, str]:
    """Write a metrics CSV and a Phy cluster_group.tsv whose labels depend on the metrics (learnable).

    ``spread`` scales the within-class noise: above about 2 the classes overlap and no model is perfect.
    """
    rng = np.random.default_rng(seed)
    labels = LABELS[rng.choice(3, size=n_units, p=[0.35, 0.4, 0.25])]
    snr = np.where(labels == "good", 8.0, np.where(labels == "mua", 4.0, 1.5)) + rng.normal(0, 1.2 * spread, n_units)
    isi = np.where(labels == "good", 0.05, 0.6) + rng.gamma(1.0, 0.1 * spread, n_units)
    df = pd.DataFrame(
        {
            id_header: np.arange(n_units) * 2 + 1,
            "snr": snr,
            "isi_violations_ratio": isi,
            "firing_rate": rng.lognormal(1.0, 0.8, n_units),
            "presence_ratio": np.clip(rng.normal(0.9, 0.1, n_units), 0, 1),
            "amplitude_median": 20 * snr + rng.normal(0, 10, n_units),
            "peak_to_valley": rng.normal(5e-4, 1e-4, n_units),
        }
    )
    df.loc[rng.random(n_units) < 0.1, "presence_ratio"] = np.nan
    folder.mkdir(parents=True, exist_ok=True)
    metrics = folder / "quality_metrics.csv"
    df.to_csv(metrics, index=False)
    labels_path = folder / "cluster_group.tsv"
    pd.DataFrame({"cluster_id": df[id_header], "group": labels}).to_csv(labels_path, sep="\t", index=False)
    return {"metrics": str(metrics), "labels": str(labels_path)}


def overlapping_recordings(folder: Path, n: int, seed: int, spread: float, n_units: int = 80) -> list[dict[str, str]]:
    """``n`` recordings ``rec0``.. whose classes overlap (``spread`` > 2): no model is perfect on them."""
    return [
        {"id": f"rec{i}", **write_recording(folder / f"rec{i}", n_units=n_units, seed=seed + i, spread=spread)}
        for i in range(n)
    ]


def features_for(model: Any, metrics_csv: str) -> pd.DataFrame:
    """A recording's metrics as SpikeInterface feeds them to ``model`` (current names, its columns, float32)."""
    X = pd.read_csv(metrics_csv).rename(columns={"peak_to_valley": "peak_to_trough_duration"})
    return X[list(model.feature_names_in_)].astype("float32")


@pytest.fixture
def tiny_recordings(tmp_path: Path) -> list[dict[str, str]]:
    """Four recordings (two subjects) of 60 units each, written under tmp_path/data."""
    recs = []
    for i in range(4):
        files = write_recording(tmp_path / "data" / f"rec{i}", n_units=60, seed=100 + i)
        recs.append({"id": f"rec{i}", "subject": f"s{i // 2}", **files})
    return recs


def make_config(tmp_path: Path, recordings: list[dict[str, str]], overrides: list[str] | None = None,
                **changes: Any) -> TrainConfig:
    """Compose the smoke experiment on ``recordings`` (nothing held out, folds by unit unless overridden), with
    everything written under tmp_path, then apply ``changes``."""
    base = ["+experiment=smoke", f"root={tmp_path}", "cv.holdout_recordings=[]", "cv.group_by=null"]
    cfg: DictConfig = compose_config([*base, *(overrides or [])])
    cfg.dataset.recordings = OmegaConf.create(recordings)
    for dotted, value in changes.items():
        OmegaConf.update(cfg, dotted.replace("__", "."), value, merge=False)
    return validate_config(cfg)


# --------------------------------------------------------------------------------------------------
# Analyzer mode: tiny generated SortingAnalyzers (unitrefine.data.synthetic), made once per session
# --------------------------------------------------------------------------------------------------

#: 10 units (5 good, 2 mua, 3 noise) per 60 s, 8-channel recording: about a second each to make.
TINY_GENERATE = {"duration_s": 60.0, "num_channels": 8, "num_units": 8, "n_merged": 1, "n_contaminated": 1,
                 "n_noise": 3}
TINY_QUALITY = ["num_spikes", "firing_rate", "presence_ratio", "snr", "isi_violation", "firing_range", "amplitude_cv",
                "amplitude_median", "noise_cutoff"]
TINY_TEMPLATE = ["peak_to_trough_duration", "half_width", "repolarization_slope", "recovery_slope",
                 "waveform_baseline_flatness"]
#: Extensions the metrics above depend on; they need the recording, which a generated analyzer does not keep.
BASE_EXTENSIONS = ["random_spikes", "templates", "noise_levels", "spike_amplitudes"]
N_BANK = 6


@pytest.fixture(scope="session")
def synthetic_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six tiny generated recordings r0..r5 (analyzer + cluster_group.tsv), with extensions but no metrics.

    Read-only: tests that change an analyzer work on a copy (:func:`copy_recordings`).
    """
    from unitrefine.config import GenerateConfig
    from unitrefine.data.synthetic import make_units, write_recording

    root = tmp_path_factory.mktemp("synthetic_bank")
    gen = GenerateConfig(**TINY_GENERATE)
    for i in range(N_BANK):
        recording, sorting, labels = make_units(gen, [7, i])
        write_recording(root / f"r{i}", "analyzer", "cluster_group.tsv", recording, sorting, labels,
                        BASE_EXTENSIONS, {})
    return root


def copy_recordings(bank: Path, dest: Path, indices: list[int]) -> list[Path]:
    """Copy recordings of the bank to ``dest``; returns their folders (each holds ``analyzer/`` and the labels)."""
    import shutil

    out = []
    for i in indices:
        target = dest / f"r{i}"
        if not target.exists():
            shutil.copytree(bank / f"r{i}", target)
        out.append(target)
    return out


def analyzer_dataset(folders: list[Path], **changes: Any) -> dict[str, Any]:
    """An analyzer-mode dataset over ``folders`` computing the tiny metric lists."""
    dataset: dict[str, Any] = {
        "name": "tiny_analyzers",
        "mode": "analyzers",
        "recordings": [
            {"id": f.name, "analyzer": str(f / "analyzer"), "labels": str(f / "cluster_group.tsv")} for f in folders
        ],
        "compute": {
            "quality_metrics": {"metric_names": TINY_QUALITY,
                                "metric_params": {"presence_ratio": {"bin_duration_s": 10}}},
            "template_metrics": {"metric_names": TINY_TEMPLATE},
        },
    }
    dataset.update(changes)
    return dataset


def make_analyzer_config(tmp_path: Path, dataset: dict[str, Any], overrides: list[str] | None = None) -> TrainConfig:
    """The smoke experiment on an analyzer-mode dataset, tracking off, writing under tmp_path."""
    cfg: DictConfig = compose_config(
        ["+experiment=smoke", f"root={tmp_path}", "tracking.enabled=false", "search.n_trials=2", "search.n_jobs=1",
         "cv.holdout_recordings=[]", "cv.n_holdout_recordings=0", "cv.group_by=null", *(overrides or [])]
    )
    cfg.dataset = OmegaConf.create(dataset)
    return validate_config(cfg)


@pytest.fixture(scope="session")
def synthetic_models(tmp_path_factory: pytest.TempPathFactory, synthetic_bank: Path) -> dict[str, Path]:
    """Model folders trained in analyzer mode on copies of r0..r3: three_class, noise_vs_neural and sua_vs_mua."""
    from unitrefine.run.training import train

    root = tmp_path_factory.mktemp("synthetic_models")
    folders = copy_recordings(synthetic_bank, root / "data", [0, 1, 2, 3])
    out = {}
    for task in ("three_class", "noise_vs_neural", "sua_vs_mua"):
        cfg = make_analyzer_config(root, analyzer_dataset(folders), [f"task={task}", f"output.folder={root}/{task}"])
        out[task] = train(cfg).model_folder
    return out


def _plain(v: Any) -> Any:
    return str(v) if isinstance(v, Path) else [_plain(x) for x in v] if isinstance(v, list) else v


def run_predict(**options: Any) -> Any:
    """``python -m unitrefine.predict key=value ...`` without the command line (paths may be Path objects)."""
    from unitrefine.apply.prediction import parse_predict_config, predict

    return predict(parse_predict_config({k: _plain(v) for k, v in options.items()}))


def read_predictions(path: Path) -> pd.DataFrame:
    """A predictions CSV with unit ids and recordings kept as text."""
    return pd.read_csv(path, dtype={"unit_id": str, "recording": str})


def snapshot(root: Path) -> dict[str, bytes]:
    """Every path under ``root``, with a file's content (a folder as b"<dir>"): the same before and after a refused
    command, it shows that nothing was written, moved, replaced or made."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(root.rglob("*"))}


def interruptible() -> None:
    """``preexec_fn`` of a command a test sends Ctrl-C (SIGINT) to: a test run started in the background of a
    non-interactive shell ignores SIGINT, and its children would inherit that."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
