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
