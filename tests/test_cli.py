"""The command line as users run it: a real subprocess, real Hydra, exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unitrefine.train", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def outputs(tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    return [
        f"tracking.uri=sqlite:///{out}/mlflow.db",
        f"tracking.artifact_location={out.as_uri()}/artifacts",
        f"output.folder={out}/model",
    ]


def test_smoke_experiment_runs_from_any_directory_and_reports(tmp_path: Path) -> None:
    """The shipped data is found relative to the project, not to the working directory."""
    proc = run_cli("+experiment=smoke", "search.n_trials=2", *outputs(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Loaded 1158 units from 4 recordings" in proc.stderr
    assert "Held-out recordings: balanced accuracy" in proc.stderr
    assert "Expected balanced accuracy on new recordings" in proc.stderr
    assert "Top trials" in proc.stderr and "mlflow ui --backend-store-uri" in proc.stderr
    assert (tmp_path / "out" / "model" / "best_model.skops").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # Hydra wrote nothing into the cwd


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dataset.recordings.0.metrics=/no/such/metrics.csv"], "The metrics file /no/such/metrics.csv does not exist"),
        (["search.n_trials=abc"], "Invalid configuration at key 'search.n_trials' (set in your command-line override "
                                  "'search.n_trials=abc'): expected a whole number, got 'abc'"),
        (["+search_space.classifier.random_forrest={}"],
         "search_space.classifier.random_forrest: 'random_forrest' is not an allowed classifier"),
        (["task=noise_vs_neural", "~task.mapping.mua"], "'mua' (first at unit"),
    ],
)
def test_user_errors_exit_2_with_one_clear_line_and_write_nothing(tmp_path: Path, args: list[str],
                                                                  message: str) -> None:
    proc = run_cli("+experiment=smoke", *args, *outputs(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written: no out/, no Hydra outputs/


def test_unknown_experiment_fails_with_one_message_and_the_closest_name(tmp_path: Path) -> None:
    proc = run_cli("+experiment=smok", cwd=tmp_path)
    assert proc.returncode == 2
    assert "There is no experiment 'smok' (no file conf/experiment/smok.yaml) (did you mean smoke?)" in proc.stderr
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def run_command(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", f"unitrefine.{command}", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(
    ("command", "args", "fragments"),
    [
        # Hydra's errors, raised while it composes the configuration
        ("train", ["+experiment=smoke", "search.n_trails=3"],
         ["Invalid configuration at key 'search.n_trails'", "did you mean search.n_trials?"]),
        ("train", ["+experiment=smoke", "+search.n_trials=3"], ["drop the '+' to change it (search.n_trials=3)"]),
        ("train", ["+experiment=smoke", "search.n_trials=[1"], ["Cannot read the override 'search.n_trials=[1'"]),
        ("train", ["+experiment=smoke", "--n-trials", "3"], ["Unknown flag(s) --n-trials", "--help"]),
        # our schema's, once Hydra has composed it
        ("train", ["+experiment=smoke", "cv.holdout_recordings=mouse2a_imec0"],
         ["Invalid configuration at key 'cv.holdout_recordings'", "expected a list such as [a,b]",
          "cv.holdout_recordings=[mouse2a_imec0]"]),
        ("train", ["+experiment=smoke", "registry.evaluation_dataset=abc"],
         ["Invalid configuration at key 'registry.evaluation_dataset'", "got 'abc'"]),
        # a key that no longer exists, and a scorer the run cannot honour
        ("train", ["+experiment=smoke", "task.positive_class=good"],
         ["at key 'task.positive_class'", "it no longer exists", "the second of task.classes"]),
        ("train", ["+experiment=smoke", "cv.scoring=f1_macro"],
         ["cv.scoring must be balanced_accuracy (got 'f1_macro')", "another scorer is not supported"]),
        # the other commands' options
        ("predict", ["modle=m", "data=d.csv", "output=o.csv"],
         ["at key 'modle'", "predict has no such option (did you mean model?)"]),
        ("suggest", ["model=m", "data=d.csv", "output=o.csv", "labels=[a,b]"],
         ["Invalid suggest option(s): labels: expected a single value or null, got [a, b]"]),
        ("promote", ["+experiment=smoke", "registry.margn=0.1"], ["did you mean registry.margin?"]),
    ],
)
def test_configuration_errors_exit_2_with_one_message_and_no_traceback(
    tmp_path: Path, command: str, args: list[str], fragments: list[str]
) -> None:
    proc = run_command(command, *args, *(outputs(tmp_path) if command == "train" else []), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert not [f for f in fragments if f not in proc.stderr], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


COMMANDS = ["train", "predict", "suggest", "promote", "merge_review", "recreate"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_prints_usage_main_options_and_examples_and_exits_0(tmp_path: Path, command: str) -> None:
    proc = run_command(command, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert out.startswith(f"usage: python -m unitrefine.{command} ")
    assert "Main options:" in out and "Examples:" in out
    assert f"\n  python -m unitrefine.{command} " in out.split("Examples:")[1]
    assert "== Config ==" not in out and "Powered by Hydra" not in out  # not Hydra's config dump
    assert list(tmp_path.iterdir()) == []


def test_train_help_lists_the_experiments_and_points_to_the_full_config(tmp_path: Path) -> None:
    out = run_command("train", "-h", cwd=tmp_path).stdout
    assert "+experiment=<name>" in out and "mouse_v1, smoke" in out
    assert "--cfg job" in out and "--hydra-help" in out and "conf/train.yaml" in out
    shown = run_command("train", "+experiment=smoke", "search.n_trials=7", "--cfg", "job", cwd=tmp_path)
    assert shown.returncode == 0 and "n_trials: 7" in shown.stdout  # Hydra's own flags still work
    hydra_help = run_command("train", "--hydra-help", cwd=tmp_path)
    assert hydra_help.returncode == 0 and hydra_help.stdout.startswith("Hydra (") and "== Flags ==" in hydra_help.stdout
    assert list(tmp_path.iterdir()) == []


def test_an_option_of_the_wrong_type_is_named_with_what_is_expected() -> None:
    from unitrefine.apply.prediction import PredictConfig
    from unitrefine.errors import UnitRefineError
    from unitrefine.options import MODEL_AND_DATA, command_options

    given = {"model": "m", "data": "a.csv", "output": "o.csv", "n_jobs": "abc", "overwrite": "perhaps", "review": "10%"}
    with pytest.raises(UnitRefineError) as info:
        command_options(given, PredictConfig, "predict", ("model", "data", "output"), MODEL_AND_DATA)
    assert str(info.value) == ("Invalid predict option(s): n_jobs: expected a whole number, got 'abc'; overwrite: "
                               "expected true or false, got 'perhaps'. See python -m unitrefine.predict --help.")
    given.update(n_jobs=2, overwrite="true", model=["noise", "sua"])  # text, lists, free-form: the command's
    options = command_options(given, PredictConfig, "predict", ("model", "data", "output"), MODEL_AND_DATA)
    assert {k: options[k] for k in given} == given
    assert options["noise_label"] == "noise" and options["phy_folder"] is None  # not given: conf/predict.yaml's


@pytest.mark.parametrize("command", ["predict", "suggest", "merge_review", "recreate"])
def test_help_describes_every_option_of_the_command(command: str) -> None:
    from omegaconf import OmegaConf

    from unitrefine.config import CONF_DIR
    from unitrefine.options import format_help

    options = set(OmegaConf.load(CONF_DIR / f"{command}.yaml")) - {"defaults", "hydra"}
    described = {line.split()[0].split("=")[0] for line in format_help(command).split("Main options:")[1]
                 .split("Examples:")[0].splitlines() if line.strip()}
    assert options == described


@pytest.mark.parametrize(("during_ctrl_c", "status"), [(True, 130), (False, 1)])
def test_an_error_raised_while_handling_ctrl_c_exits_as_an_interrupt_and_only_then(
    tmp_path: Path, during_ctrl_c: bool, status: int
) -> None:
    # After the search, Optuna's journal lock can turn a Ctrl-C into the FileNotFoundError of its clean-up.
    script = f"""
import sys
import unitrefine.run.training

def train(cfg):
    if {during_ctrl_c}:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise FileNotFoundError("the journal lock file")
    raise FileNotFoundError("the journal lock file")

unitrefine.run.training.train = train
from unitrefine.train import main
sys.argv = ["unitrefine.train", "+experiment=smoke"]
main()
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == status
    assert ("Run the same command again to resume" in proc.stderr) is during_ctrl_c
    assert ("Traceback" in proc.stderr) is not during_ctrl_c
