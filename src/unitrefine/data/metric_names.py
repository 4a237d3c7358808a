"""Old SpikeInterface template-metric names, mapped to the current ones (flipping signs as needed)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

#: Old SpikeInterface template-metric names -> (current name, sign), as SpikeInterface's
#: ``_BACKWARD_COMPATIBILITY_MAP`` does.
RENAMED_METRICS = {
    "peak_to_valley": ("peak_to_trough_duration", 1.0),
    "half_width": ("trough_half_width", 1.0),
    "peak_trough_ratio": ("peak_after_to_trough_ratio", -1.0),
}


def rename_old_metrics(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Map pre-0.103.2 SpikeInterface template-metric names to current ones (flipping signs as needed)."""
    for old, (new, sign) in RENAMED_METRICS.items():
        if old not in df.columns:
            continue
        if new in df.columns:
            log.warning("%s: has both '%s' and '%s'; using '%s'.", path, old, new, new)
            df = df.drop(columns=[old])
        else:
            df = df.rename(columns={old: new})
            if sign != 1.0:
                df[new] = sign * df[new]
    return df


def with_old_names(names: Sequence[str]) -> set[str]:
    """``names`` plus the old SpikeInterface names of any renamed metric among them."""
    return set(names) | {old for old, (new, _) in RENAMED_METRICS.items() if new in names}


def current_metric_name(name: str) -> str:
    """The current SpikeInterface name of a metric (old template-metric names are mapped)."""
    return RENAMED_METRICS[name][0] if name in RENAMED_METRICS else name
