"""Synthetic SortingAnalyzers whose curation labels carry real signal (the tutorial's second path).

Each recording is SpikeInterface's ``generate_ground_truth_recording`` (seeded). Its "sorting" is made from
the ground truth, so every label is known:

- ``good``: a ground-truth unit as it is;
- ``mua``: two ground-truth units merged into one, or a ground-truth unit with spikes of an unrelated spike
  train added (``contamination`` x its own count);
- ``noise``: a spike train from an unrelated sorting (no template in this recording fires with it).

Unit ids are shuffled integers, so their order says nothing about the labels. A recording folder holds the
analyzer (with the extensions the configured metrics depend on, computed while the recording is in memory:
the generated recording is not saved with the analyzer), a Phy-style ``cluster_group.tsv`` and a manifest;
it is written atomically and regenerated only when its parameters change.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unitrefine.config import DatasetConfig, GenerateConfig
from unitrefine.data import analyzers as az
from unitrefine.data import si_metrics as sm
from unitrefine.errors import UnitRefineError
from unitrefine.folders import write_folder

log = logging.getLogger(__name__)

MANIFEST = "synthetic.json"
#: Bump when the labelling rule or the analyzer recipe changes: cached recordings are then regenerated.
RECIPE_VERSION = 1
_REFRACTORY_MS = 4.0


def check_generate(gen: GenerateConfig) -> None:
    """Fail early on generator settings that cannot make every class.

    Raises
    ------
    UnitRefineError
        Too few ground-truth units for the merges and contaminations, or non-positive sizes.
    """
    needed = 2 * gen.n_merged + gen.n_contaminated + 1
    problems = []
    if gen.num_units < needed:
        problems.append(
            f"dataset.generate.num_units={gen.num_units} is too few for {gen.n_merged} merged pairs and "
            f"{gen.n_contaminated} contaminated units with at least one good unit left (need >= {needed})"
        )
    if min(gen.n_merged, gen.n_contaminated, gen.n_noise) < 0 or gen.num_channels < 1 or gen.duration_s <= 0:
        problems.append("dataset.generate sizes must be >= 0, num_channels >= 1 and duration_s > 0")
    if gen.duration_s < 60:
        log.warning("dataset.generate.duration_s=%s: below 60 s some metrics (presence_ratio, rp_contamination) "
                    "come out NaN.", gen.duration_s)
    if problems:
        raise UnitRefineError("Invalid synthetic data settings:\n  - " + "\n  - ".join(problems))


def make_units(gen: GenerateConfig, seed: int | Sequence[int]) -> tuple[Any, Any, pd.Series]:
    """Generate one recording and a sorting of it with known labels.

    Parameters
    ----------
    gen : GenerateConfig
        Sizes, duration, firing rate, contamination.
    seed : int or sequence of int
        Seeds everything (via :class:`numpy.random.SeedSequence`).

    Returns
    -------
    recording, sorting, labels
        The ground-truth recording, the made-up sorting and its labels (``good``/``mua``/``noise``) indexed by
        unit id (strings).
    """
    from spikeinterface.core import NumpySorting, generate_ground_truth_recording, generate_sorting

    s_rec, s_other, s_rng = (int(s) for s in np.random.SeedSequence(seed).generate_state(3))
    recording, truth = generate_ground_truth_recording(
        durations=[gen.duration_s], num_units=gen.num_units, num_channels=gen.num_channels,
        generate_sorting_kwargs={"firing_rates": gen.firing_rate_hz, "refractory_period_ms": _REFRACTORY_MS},
        seed=s_rec,
    )
    fs = recording.get_sampling_frequency()
    unrelated = generate_sorting(
        num_units=max(gen.n_noise + gen.n_contaminated, 1), durations=[gen.duration_s], sampling_frequency=fs,
        firing_rates=gen.firing_rate_hz, refractory_period_ms=_REFRACTORY_MS, seed=s_other,
    )
    rng = np.random.default_rng(s_rng)
    order = list(rng.permutation(np.asarray(truth.unit_ids)))
    train = {u: truth.get_unit_spike_train(u) for u in truth.unit_ids}
    other = [unrelated.get_unit_spike_train(u) for u in unrelated.unit_ids]
    trains: list[np.ndarray] = []
    labels: list[str] = []
    merged, order = order[: 2 * gen.n_merged], order[2 * gen.n_merged:]
    for a, b in zip(merged[::2], merged[1::2]):
        trains.append(np.concatenate([train[a], train[b]]))
        labels.append("mua")
    contaminated, order = order[: gen.n_contaminated], order[gen.n_contaminated:]
    for j, u in enumerate(contaminated):
        extra = other[gen.n_noise + j]
        n = min(len(extra), round(gen.contamination * len(train[u])))
        trains.append(np.concatenate([train[u], rng.choice(extra, size=n, replace=False)]))
        labels.append("mua")
    for u in order:
        trains.append(train[u])
        labels.append("good")
    for j in range(gen.n_noise):
        trains.append(other[j])
        labels.append("noise")
    ids = rng.permutation(len(trains))
    units = {int(i): np.unique(t).astype(np.int64) for i, t in zip(ids, trains)}
    sorting = NumpySorting.from_unit_dict([units], fs)
    return recording, sorting, pd.Series(labels, index=[str(int(i)) for i in ids], name="label")


def write_recording(
    folder: Path,
    analyzer_name: str,
    labels_name: str,
    recording: Any,
    sorting: Any,
    labels: pd.Series,
    extensions: Sequence[str],
    extension_params: Mapping[str, Any],
    manifest: Mapping[str, Any] | None = None,
    n_jobs: int = 1,
) -> Path:
    """Write ``folder`` atomically: the analyzer (with ``extensions``), the labels TSV and the manifest.

    Returns
    -------
    Path
        ``folder``.
    """
    from spikeinterface.core import create_sorting_analyzer

    fmt = "zarr" if analyzer_name.endswith(".zarr") else "binary_folder"

    def fill(staging: Path) -> None:
        analyzer = create_sorting_analyzer(
            sorting, recording, format=fmt, folder=staging / analyzer_name, sparse=True,
            job_kwargs={"n_jobs": n_jobs, "progress_bar": False},
        )
        az.ensure_extensions(analyzer, extensions, extension_params, n_jobs, True, str(folder))
        table = pd.DataFrame({"cluster_id": labels.index.astype(int), "group": labels.to_numpy()})
        table.sort_values("cluster_id").to_csv(staging / labels_name, sep="\t", index=False)
        if manifest is not None:
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    return write_folder(folder, fill, overwrite=True)


# Over 60 lines: its numpydoc docstring; the code is 50 lines.
def ensure_recordings(dataset: DatasetConfig, root: Path, wanted: Mapping[str, Sequence[str]]) -> list[str]:
    """Generate the dataset's recordings that are missing or were made with other parameters.

    Recording ``i`` is seeded with ``(dataset.generate.seed, i)``. Its ``analyzer`` and ``labels`` paths must
    share a folder, which is written as a whole.

    Parameters
    ----------
    dataset : DatasetConfig
        An analyzer-mode dataset with ``generate`` set.
    root : Path
        Relative paths are resolved against it.
    wanted : mapping
        Extension -> metric names the training will compute: their dependencies are computed here.

    Returns
    -------
    list of str
        The ids of the recordings generated now.

    Raises
    ------
    UnitRefineError
        Bad generator settings, or a recording folder that exists but was not made here.
    """
    gen = dataset.generate
    assert gen is not None
    check_generate(gen)
    extensions = list(dict.fromkeys(d for ext, names in wanted.items() if names for d in az.dependencies(ext, names)))
    configured = dict(dataset.compute.extensions or {})
    ext_params = {name: az.extension_params_for(name, configured)
                  for name in sorted({*extensions, *az.DEFAULT_EXTENSION_PARAMS, *configured})}
    made = []
    for index, rec in enumerate(dataset.recordings):
        if rec.analyzer is None or rec.labels is None:
            raise UnitRefineError(f"Synthetic recording '{rec.id}' needs both an 'analyzer' and a 'labels' path.")
        analyzer = root / Path(rec.analyzer).expanduser()
        labels = root / Path(rec.labels).expanduser()
        if analyzer.parent != labels.parent:
            raise UnitRefineError(
                f"Synthetic recording '{rec.id}': put its analyzer and labels in one folder (got {analyzer.parent} "
                f"and {labels.parent}); the folder is written as a whole."
            )
        folder = analyzer.parent
        manifest = sm.json_normalise({
            "recipe": RECIPE_VERSION,
            "generate": dataclasses.asdict(gen),
            "index": index,
            "analyzer": analyzer.name,
            "labels": labels.name,
            "extensions": ext_params,
            "metrics": {ext: list(names) for ext, names in wanted.items()},
            "compute": {k: v for k, v in dataclasses.asdict(dataset.compute).items() if k not in ("n_jobs", "save")},
            "spikeinterface": version("spikeinterface"),
        })
        manifest_file = folder / MANIFEST
        if folder.exists():
            if not manifest_file.is_file():
                raise UnitRefineError(
                    f"{folder} exists but was not made by unitrefine's synthetic-data generator (it has no "
                    f"{MANIFEST}). Move it, or point recording '{rec.id}' elsewhere."
                )
            try:
                current = json.loads(manifest_file.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                current = None
            if current == manifest and analyzer.exists() and labels.is_file():
                continue
            log.info("Synthetic recording '%s': its parameters changed; regenerating %s.", rec.id, folder)
        log.info("Generating synthetic recording '%s' in %s.", rec.id, folder)
        recording, sorting, unit_labels = make_units(gen, [gen.seed, index])
        write_recording(folder, analyzer.name, labels.name, recording, sorting, unit_labels, extensions,
                        dataset.compute.extensions, manifest, dataset.compute.n_jobs)
        made.append(rec.id)
    return made
