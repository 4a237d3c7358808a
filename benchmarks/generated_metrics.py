"""Generated per-unit metric tables that look like the curated recordings, at any size (used by the benchmarks).

Each generated recording copies a real one of ``experiments/mouse_v1/data/``: its units are drawn per class
(class counts multinomial with the real recording's proportions) by resampling that recording's rows of the
class, then jittering every value by a few per cent. Resampling whole rows keeps each recording's NaN rates and
the metrics that are missing together (drift_*, amplitude_cv_*, velocity_*); a metric missing from the real
recording's file (sd_ratio in mouse4) is missing from the generated file too. Integer-valued metrics stay
integers and metrics bounded to [0, 1] stay in it. Recording sizes are drawn from the real ones (188-785 units).

The real files have 38 metric columns; wider tables get extra columns that are jittered copies of real metrics
(``snr_copy``, ``firing_rate_copy``, ...), so the extra features are correlated and uninformative as in
practice. Tables are written as SpikeInterface/Phy would: ``quality_metrics.csv`` (``cluster_id`` first) and
``cluster_group.tsv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT = Path(__file__).resolve().parents[1]
REAL_DATA = PROJECT / "experiments" / "mouse_v1" / "data"
#: Relative jitter of every value (log-normal sigma).
JITTER = 0.05
#: Real metrics whose jittered copies widen a table beyond the real columns, in this order.
COPY_SOURCES = ("snr", "firing_rate", "amplitude_median", "isi_violations_ratio", "presence_ratio", "num_spikes")


@dataclass(frozen=True)
class Recording:
    """One real recording: its metrics (unit ids dropped), curation labels aligned with them, and its name."""

    name: str
    metrics: pd.DataFrame
    labels: np.ndarray


def load_real(folder: Path = REAL_DATA) -> list[Recording]:
    """The curated recordings under ``folder`` (each ``<name>/quality_metrics.csv`` + ``cluster_group.tsv``)."""
    recordings = []
    for metrics_path in sorted(folder.glob("*/quality_metrics.csv")):
        metrics = pd.read_csv(metrics_path)
        groups = pd.read_csv(metrics_path.with_name("cluster_group.tsv"), sep="\t")
        labels = groups.set_index(groups.columns[0])[groups.columns[1]]
        ids = metrics.pop(metrics.columns[0])
        recordings.append(Recording(metrics_path.parent.name, metrics, labels.reindex(ids).to_numpy(dtype=str)))
    if not recordings:
        raise FileNotFoundError(f"no */quality_metrics.csv under {folder}")
    return recordings


def metric_columns(real: list[Recording], n_metrics: int) -> list[str]:
    """The first ``n_metrics`` real metric columns (in file order), then jittered copies as needed."""
    columns = list(dict.fromkeys(c for r in real for c in r.metrics.columns))
    extra = [f"{c}_copy" for c in COPY_SOURCES if c in columns]
    if n_metrics > len(columns) + len(extra):
        raise ValueError(f"at most {len(columns) + len(extra)} metrics can be generated (asked {n_metrics})")
    return (columns + extra)[:n_metrics]


def _jitter(values: pd.DataFrame, template: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Multiply by log-normal noise; keep integer columns integer and [0, 1] columns inside [0, 1]."""
    out = values * np.exp(rng.normal(0.0, JITTER, values.shape))
    for col in out.columns:
        real = template[col].dropna()
        if real.empty:
            continue
        if np.all(np.mod(real, 1) == 0):
            out[col] = out[col].round()
        if real.min() >= 0 and real.max() <= 1:
            out[col] = out[col].clip(0, 1)
    return out


def generate_recording(
    template: Recording, n_units: int, columns: list[str], rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray]:
    """``n_units`` units resampled per class from ``template``; returns metrics (with ``cluster_id``) and labels."""
    classes, counts = np.unique(template.labels, return_counts=True)
    drawn = rng.multinomial(n_units, counts / counts.sum())
    rows = np.concatenate([
        rng.choice(np.flatnonzero(template.labels == c), size=k, replace=True) for c, k in zip(classes, drawn)
    ])
    rng.shuffle(rows)
    base = template.metrics.iloc[rows].reset_index(drop=True)
    for col in columns:
        if col.endswith("_copy") and col not in base.columns and col[: -len("_copy")] in base.columns:
            base[col] = base[col[: -len("_copy")]] * np.exp(rng.normal(0.0, 0.3, len(base)))
    kept = [c for c in columns if c in base.columns]  # a metric the template's file lacks stays absent
    metrics = _jitter(base[kept], base[kept], rng)
    metrics.insert(0, "cluster_id", np.arange(n_units))
    return metrics, template.labels[rows]


def recording_sizes(n_units: int, real: list[Recording], rng: np.random.Generator) -> list[int]:
    """Sizes drawn from the real recordings' sizes, summing to ``n_units``."""
    real_sizes = [len(r.labels) for r in real]
    sizes: list[int] = []
    while sum(sizes) < n_units:
        sizes.append(int(rng.choice(real_sizes)))
    sizes[-1] -= sum(sizes) - n_units
    return sizes


def write_dataset(folder: Path, n_units: int, n_metrics: int = 40, seed: int = 0,
                  one_file: bool = False) -> list[dict[str, str]]:
    """Write generated recordings (``rec0000/quality_metrics.csv`` + ``cluster_group.tsv``) under ``folder``.

    Parameters
    ----------
    folder : Path
        Output folder (created).
    n_units, n_metrics : int
        Total units and metric columns.
    seed : int
        Everything is drawn from this seed.
    one_file : bool
        Write all units as a single recording (e.g. a large table to predict on).

    Returns
    -------
    list of dict
        The dataset's recordings as a unitrefine dataset config lists them (``id``, ``metrics``, ``labels``).
    """
    rng = np.random.default_rng(seed)
    real = load_real()
    columns = metric_columns(real, n_metrics)
    sizes = [n_units] if one_file else recording_sizes(n_units, real, rng)
    recordings = []
    for i, size in enumerate(sizes):
        template = real[int(rng.integers(len(real)))]
        metrics, labels = generate_recording(template, size, columns, rng)
        rec = folder / f"rec{i:04d}"
        rec.mkdir(parents=True, exist_ok=True)
        metrics.to_csv(rec / "quality_metrics.csv", index=False)
        pd.DataFrame({"cluster_id": metrics["cluster_id"], "group": labels}).to_csv(
            rec / "cluster_group.tsv", sep="\t", index=False)
        recordings.append({"id": rec.name, "metrics": str(rec / "quality_metrics.csv"),
                           "labels": str(rec / "cluster_group.tsv")})
    return recordings


def write_dataset_config(conf_dir: Path, recordings: list[dict[str, str]], name: str = "generated") -> str:
    """Write ``<conf_dir>/dataset/<name>.yaml`` for ``--config-dir <conf_dir> dataset=<name>``; return ``name``."""
    import yaml

    path = conf_dir / "dataset" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"name": name, "mode": "csv", "recordings": recordings, "metric_names": None}
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return name
