"""A throwaway PostgreSQL server on loopback for tests (skipped with the reason when it cannot be had)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (on PATH, or Debian's /usr/lib/postgresql/<v>/bin)."""
    on_path = shutil.which("initdb"), shutil.which("pg_ctl")
    if all(on_path):
        return Path(os.path.realpath(on_path[0])).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(folder, "initdb").is_file() and Path(folder, "pg_ctl").is_file():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a PostgreSQL cluster in a temporary folder; yield the URL of its ``postgres`` database.

    As root the server runs as the ``postgres`` user (PostgreSQL refuses to run as root). The cluster is
    stopped and its folder removed afterwards.
    """
    bindir = server_binaries()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; install them "
                    "(apt-get install postgresql, as .ci/run does) to run this test")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver psycopg is not installed (pip install -e .[test])")
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        prefix = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="unitrefine-pg-"))
    if prefix:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", _free_port()
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "unitrefine", "--no-sync"],
                   check=True, capture_output=True, timeout=120)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-o", options,
                    "-w", "-t", "60", "start"], check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql://unitrefine@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=120, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server; return its URL."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"
