"""The command process's set-up: one thread per fit, and the `unitrefine` name shared with another project."""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path

import pytest

from unitrefine.process import DISTRIBUTION, other_unitrefine, prepare_command_process


def _install_fake(site: Path, name: str, version: str) -> None:
    """A distribution's metadata as pip leaves it, providing the top-level package ``unitrefine``."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    (info / "top_level.txt").write_text("unitrefine\n", encoding="utf-8")


def test_our_own_distribution_is_not_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_fake(tmp_path, DISTRIBUTION, "9.9.9")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert other_unitrefine() is None


def test_the_gui_package_sharing_the_import_name_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    _install_fake(tmp_path, "unitrefine", "0.2.0")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert other_unitrefine() == "unitrefine 0.2.0"
    with caplog.at_level(logging.WARNING, logger="unitrefine"):
        prepare_command_process()
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "unitrefine 0.2.0" in message and DISTRIBUTION in message and "environment" in message


def test_one_thread_per_fit_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    prepare_command_process()
    assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["MKL_NUM_THREADS"] == "3"


def test_the_distribution_name_is_the_one_pyproject_installs() -> None:
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == DISTRIBUTION != "unitrefine"
