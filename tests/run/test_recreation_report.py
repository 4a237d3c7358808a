"""The report of a re-creation as text, and the command's exit status for each outcome (reports built directly;
the command's refusals run in-process, before any training)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from unitrefine.config import CONF_DIR
from unitrefine.errors import UnitRefineError, command_exits
from unitrefine.run.recreation import DataChanged
from unitrefine.run.recreation_report import RecreateReport

RUN = "0123456789abcdef0123456789abcdef"
FINGERPRINT = "fedcba9876543210" + "0" * 48


def _report(**changes: object) -> RecreateReport:
    """An identical re-creation of a model folder (its run known) into a temporary folder, with ``changes``."""
    fields: dict[str, object] = dict(
        source="models/smoke", run_id=RUN, identical=True, differences=(), warnings=(), data_fingerprint=FINGERPRINT,
        n_trials=4, max_score_difference=0.0, max_probability_difference=0.0, n_training_units=180, labels_differ=0,
        max_holdout_difference=None, recreated_folder=None,
    )
    return RecreateReport(**{**fields, **changes})  # type: ignore[arg-type]


def test_an_identical_re_creation_reads_as_such() -> None:
    assert _report().summary() == (
        f"Re-created models/smoke (MLflow run {RUN}) from its recorded configuration:\n"
        "  data: fingerprint fedcba9876543210 as recorded\n"
        "  trials: 4 recorded; largest CV-score difference 0\n"
        "  predictions on the 180 training units: largest probability difference 0, 0 label(s) differ\n"
        "  re-created model folder: removed (pass output=<folder> to keep it)\n"
        "Result: identical"
    )


def test_a_differing_re_creation_lists_its_numbers_warnings_and_differences(tmp_path: Path) -> None:
    report = _report(
        source=RUN, identical=False, max_score_difference=0.000123456, max_probability_difference=float("inf"),
        labels_differ=180, max_holdout_difference=0.0123456, recreated_folder=tmp_path / "again",
        warnings=("the recorded run had a time cap", "package versions differ"),
        differences=("trial 1: FAIL -> COMPLETE", "the exported models cannot be compared: other classes"),
    )
    assert report.summary() == (
        f"Re-created {RUN} from its recorded configuration:\n"  # the run is the source: not named twice
        "  data: fingerprint fedcba9876543210 as recorded\n"
        "  trials: 4 recorded; largest CV-score difference 0.000123\n"
        "  predictions on the 180 training units: largest probability difference inf, 180 label(s) differ\n"
        "  held-out predictions: largest probability difference 0.0123\n"
        "  warning: the recorded run had a time cap\n"
        "  warning: package versions differ\n"
        f"  re-created model folder: {tmp_path / 'again'}\n"
        "Result: differs\n"
        "  - trial 1: FAIL -> COMPLETE\n"
        "  - the exported models cannot be compared: other classes"
    )


def test_a_folder_without_a_known_run_and_equal_held_out_predictions() -> None:
    lines = _report(run_id=None, max_holdout_difference=0.0).summary().splitlines()
    assert lines[0] == "Re-created models/smoke from its recorded configuration:"
    assert lines[4] == "  held-out predictions: largest probability difference 0"  # 0.0 is shown, None is not
    assert lines[-1] == "Result: identical"


# ------------------------------------------------------------------------------------------------------------
# Exit status: 0 identical, 3 differs, 4 data changed (nothing trained), 2 any other user error
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def optuna_verbosity() -> Iterator[None]:
    """The command quiets Optuna's logging for the process: put it back afterwards."""
    level = optuna.logging.get_verbosity()
    yield
    optuna.logging.set_verbosity(level)


def test_the_documented_exit_statuses_are_the_command_s() -> None:
    from unitrefine.recreate import EXIT_DIFFERS

    documented = (CONF_DIR / "recreate.yaml").read_text(encoding="utf-8")
    assert (f"Exit status: 0 identical, {EXIT_DIFFERS} differs, {DataChanged.exit_status} data changed, "
            f"{UnitRefineError.exit_status} other user errors.") in " ".join(
        line.lstrip("# ") for line in documented.splitlines())
    assert (EXIT_DIFFERS, DataChanged.exit_status, UnitRefineError.exit_status) == (3, 4, 2)


def test_changed_data_exit_4_with_the_message(caplog: pytest.LogCaptureFixture) -> None:
    message = "Refusing to re-create models/smoke: its data changed. Nothing was trained."
    with pytest.raises(SystemExit) as exit_, command_exits():
        raise DataChanged(message)
    assert exit_.value.code == 4 and caplog.records[-1].getMessage() == message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"source": "{tmp}/no_such_model"}, "source={tmp}/no_such_model: there is no such folder"),
        ({"source": "{tmp}", "tolerance": -0.5}, "tolerance must be >= 0 (got -0.5)."),
        ({"source": "{tmp}", "tolerence": 0.1}, "Unknown recreate option(s): tolerence (did you mean tolerance?)"),
    ],
)
def test_other_user_errors_exit_2_before_any_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, optuna_verbosity: None, options: dict, message: str
) -> None:
    from unitrefine.recreate import _hydra_main

    given = {"output": None, "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "tolerance": 0.0,
             **{k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in options.items()}}
    with caplog.at_level(logging.ERROR, logger="unitrefine"), pytest.raises(SystemExit) as exit_:
        _hydra_main(OmegaConf.create(given))
    assert exit_.value.code == 2
    assert message.format(tmp=tmp_path) in caplog.records[-1].getMessage()
    assert sorted(tmp_path.iterdir()) == []
