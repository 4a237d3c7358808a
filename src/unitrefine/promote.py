"""Promotion in the Model Registry: ``python -m unitrefine.promote +experiment=<name> [force=true]``.

The registered ``challenger`` and ``champion`` are scored on the same labelled units: by default the
held-out recordings, through each version's predictions from its configuration fitted without them (the
exported models may have been refit on everything); or ``registry.evaluation_dataset``, through the
exported models themselves. ``champion`` moves to the challenger
only when it wins by more than ``registry.margin`` (or with ``force=true``). The comparison is an MLflow
run; the decision and the previous champion are model-version tags.
"""

from __future__ import annotations

from unitrefine.process import prepare_command_process

prepare_command_process()

import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import hydra  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from unitrefine.cli import run_command  # noqa: E402
from unitrefine.config import CONF_DIR, TrainConfig, validate_config  # noqa: E402
from unitrefine.errors import UnitRefineError  # noqa: E402
from unitrefine.export.model_info import read_model_info  # noqa: E402

log = logging.getLogger("unitrefine.promote")


@dataclass(frozen=True)
class Decision:
    """The outcome of one comparison."""

    promoted: bool
    reason: str
    champion: str | None
    challenger: str
    champion_score: float | None
    challenger_score: float
    delta: float | None
    ci: tuple[float, float] | None


def bootstrap_delta(
    y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, groups: np.ndarray, n: int, seed: int
) -> tuple[float, float]:
    """95 % bootstrap interval of balanced accuracy(b) - balanced accuracy(a), resampling ``groups``.

    Pass unit indices as ``groups`` to resample units, recording ids to resample whole recordings.
    """
    from unitrefine.search.evaluation import balanced_accuracy

    rng = np.random.default_rng(seed)
    ids = np.unique(groups)
    members = {g: np.flatnonzero(groups == g) for g in ids}
    deltas = []
    for _ in range(n):
        idx = np.concatenate([members[g] for g in rng.choice(ids, size=len(ids), replace=True)])
        deltas.append(balanced_accuracy(y[idx], pred_b[idx]) - balanced_accuracy(y[idx], pred_a[idx]))
    low, high = np.percentile(deltas, [2.5, 97.5])
    return float(low), float(high)


def _info(folder: Path) -> dict[str, Any]:
    return read_model_info(folder)


def _on_dataset(cfg: TrainConfig, folder: Path, which: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true class, predicted class, recording) of a version's exported model on ``registry.evaluation_dataset``."""
    from unitrefine.data.loading import load_dataset
    from unitrefine.export.folder import load_model_folder

    assert cfg.registry.evaluation_dataset is not None
    table = load_dataset(cfg.registry.evaluation_dataset, cfg.task, cfg.root_dir)
    model, info = load_model_folder(folder)
    if not info.get("features"):
        raise UnitRefineError(f"The {which} model's model_info.json ({folder}) lists no features: it was not written "
                              "by unitrefine.train. Register a model folder that unitrefine.train exported.")
    missing = [f for f in info["features"] if f not in table.X.columns]
    if missing:
        raise UnitRefineError(f"registry.evaluation_dataset lacks metrics {missing} that the {which} model needs.")
    return table.y, model.predict(table.X[info["features"]]), table.units["recording"].to_numpy()


def _on_holdout(folders: dict[str, Path]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """True classes, each version's predictions and recordings on the held-out units both versions share.

    Each version's predictions come from its best configuration fitted *without* the held-out recordings
    (``holdout_predictions.csv``), so neither model has seen the units it is compared on, even when the
    exported models were refit on everything.
    """
    from unitrefine.export.folder import HOLDOUT_PREDICTIONS_FILE

    frames = {}
    for which, folder in folders.items():
        path = folder / HOLDOUT_PREDICTIONS_FILE
        if not path.is_file():
            raise UnitRefineError(
                f"The {which} version has no held-out predictions (it was trained with nothing held out). Set "
                "cv.holdout_recordings when training, or registry.evaluation_dataset to labelled data neither "
                "model was trained on."
            )
        df = pd.read_csv(path, dtype={"unit_id": str, "recording": str})
        frames[which] = df.set_index(["recording", "unit_id"]).sort_index()
    keys = [set(f.index) for f in frames.values()]
    if any(k != keys[0] for k in keys):
        raise UnitRefineError(
            "The two versions were held out on different recordings, so their held-out predictions cannot be "
            "compared. Set registry.evaluation_dataset to labelled data neither model was trained on."
        )
    first = next(iter(frames.values()))
    classes = sorted(set(first["true_class"]))
    code = {c: i for i, c in enumerate(classes)}
    y = first["true_class"].map(code).to_numpy()
    preds = {
        w: f.loc[first.index, "predicted_class"].map(lambda c: code.get(c, -1)).to_numpy() for w, f in frames.items()
    }
    return y, preds, first.index.get_level_values("recording").to_numpy()


# Over 60 lines: its numpydoc docstring; the code is 52 lines.
def promote(cfg: TrainConfig, force: bool = False) -> Decision:
    """Compare ``challenger`` with ``champion`` and move ``champion`` if the challenger wins.

    Parameters
    ----------
    cfg : TrainConfig
        The experiment's configuration (tracking store, model name, evaluation data, margin).
    force : bool
        Promote the challenger whatever the scores.

    Returns
    -------
    Decision

    Raises
    ------
    UnitRefineError
        No challenger; models whose features or labels differ; no evaluation data.
    """
    from unitrefine.search.evaluation import balanced_accuracy
    from unitrefine.tracking.promotion import alias_versions, download_version
    from unitrefine.tracking.tracker import Tracker, default_tracking_uri

    name = cfg.tracking.model_name or cfg.experiment_name
    tracker = Tracker(cfg.tracking.uri or default_tracking_uri(cfg.root_dir), cfg.experiment_name, None)
    aliases = alias_versions(tracker, name, ("challenger", "champion"))
    challenger, champion = aliases["challenger"], aliases["champion"]
    if challenger is None:
        raise UnitRefineError(
            f"Registered model '{name}' has no 'challenger' version in {tracker.uri}. Train one that passes the "
            "gate (registry.gate_min_score) first."
        )
    if champion == challenger:
        log.info("Version %s of '%s' is already the champion: nothing to do.", challenger, name)
        return Decision(False, "already champion", champion, challenger, None, float("nan"), None, None)

    with tempfile.TemporaryDirectory(prefix="unitrefine-promote-") as tmp:
        folders = {"challenger": download_version(tracker, name, challenger, Path(tmp))}
        if champion is not None:
            folders["champion"] = download_version(tracker, name, champion, Path(tmp))
            infos = {w: _info(f) for w, f in folders.items()}
            for key, what in (("features", "feature sets"), ("label_conversion", "label sets")):
                if infos["champion"][key] != infos["challenger"][key]:
                    raise UnitRefineError(
                        f"Cannot compare versions {champion} and {challenger} of '{name}': their {what} differ "
                        f"({infos['champion'][key]} vs {infos['challenger'][key]}). Register the new model under "
                        "another name."
                    )
        if cfg.registry.evaluation_dataset is not None:
            evaluated = {w: _on_dataset(cfg, f, w) for w, f in folders.items()}
            y, _, recordings = evaluated["challenger"]
            preds = {w: e[1] for w, e in evaluated.items()}
        else:
            y, preds, recordings = _on_holdout(folders)
    chal_score = balanced_accuracy(y, preds["challenger"])
    if champion is None:
        decision = Decision(True, "no champion yet", None, challenger, None, chal_score, None, None)
    else:
        champ_score = balanced_accuracy(y, preds["champion"])
        by_recording = cfg.registry.bootstrap_by == "recording" and len(set(recordings)) > 1
        groups = recordings if by_recording else np.arange(len(y))
        ci = bootstrap_delta(y, preds["champion"], preds["challenger"], groups, cfg.registry.n_bootstrap, cfg.seed)
        delta = chal_score - champ_score
        wins = delta > cfg.registry.margin
        reason = "forced" if force else (
            f"challenger {'wins' if wins else 'does not win'}: delta {delta:+.4f} vs margin {cfg.registry.margin:.4f}"
        )
        decision = Decision(force or wins, reason, champion, challenger, champ_score, chal_score, delta, ci)

    _record(tracker, cfg, name, decision, n_units=len(y), recordings=sorted(set(recordings)))
    return decision


def _record(tracker: Any, cfg: TrainConfig, name: str, d: Decision, n_units: int, recordings: list[str]) -> None:
    """Log the comparison as an MLflow run; move the alias and tag both versions."""
    from unitrefine.tracking.promotion import record_decision

    tags = {
        "unitrefine.promotion": "promoted" if d.promoted else "rejected",
        "unitrefine.challenger_version": d.challenger,
        "unitrefine.champion_version": d.champion or "none",
        "unitrefine.evaluation_recordings": ",".join(recordings),
        "unitrefine.reason": d.reason,
    }
    metrics = {"challenger_balanced_accuracy": d.challenger_score, "n_units": float(n_units)}
    if d.champion_score is not None and d.delta is not None and d.ci is not None:
        metrics.update(champion_balanced_accuracy=d.champion_score, delta=d.delta, delta_ci_low=d.ci[0],
                       delta_ci_high=d.ci[1])
    decision = "promoted" if d.promoted else "rejected"
    challenger_tags = {"promotion.decision": f"{decision}: {d.reason}",
                       "promotion.previous_champion": d.champion or "none"}
    if d.delta is not None:
        challenger_tags["promotion.delta"] = f"{d.delta:+.4f}"
    version_tags = {d.challenger: challenger_tags}
    if d.promoted and d.champion is not None:
        version_tags[d.champion] = {"promotion.replaced_by": d.challenger}
    record_decision(tracker, name, tags, metrics, version_tags, d.challenger if d.promoted else None)
    ci = f" (95 % CI of the difference {d.ci[0]:+.4f} .. {d.ci[1]:+.4f})" if d.ci else ""
    log.info(
        "%s: challenger v%s %.4f vs champion %s %s%s -> %s. models:/%s@champion is v%s.",
        name, d.challenger, d.challenger_score, f"v{d.champion}" if d.champion else "(none)",
        f"{d.champion_score:.4f}" if d.champion_score is not None else "", ci, decision, name,
        d.challenger if d.promoted else d.champion,
    )


def main() -> None:
    """``python -m unitrefine.promote``: ``--help``, configuration errors as one message (exit 2), then the command."""
    run_command("promote", _hydra_main)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="promote")
def _hydra_main(cfg: DictConfig) -> None:
    """Validate the composed config and promote; user errors end with a message and exit status 2."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(raw, dict)
    force = raw.pop("force")
    try:
        if not isinstance(force, bool):  # YAML's true/false; anything else (force=maybe, force=1) is a mistake
            raise UnitRefineError(f"force must be true or false (got {force!r}): force=true promotes the challenger "
                                  "whatever the comparison says.")
        promote(validate_config(raw), force=force)
    except UnitRefineError as exc:
        log.error("%s", exc)
        sys.exit(2)


if __name__ == "__main__":
    main()
