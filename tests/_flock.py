"""Another process taking an flock, with plain fcntl (independent of the code tested): a live worker's lock."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

# Another process taking an flock on argv[1]: "hold" waits for it and keeps it until stdin closes (or the process is
# killed); "try" takes it without waiting and says whether it got it. Plain fcntl, independent of the code tested.
FLOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if sys.argv[2] == "try" else 0))
except BlockingIOError:
    print("busy", flush=True)
    sys.exit(0)
print("locked", flush=True)
if sys.argv[2] == "hold":
    sys.stdin.read()
"""


def other_process_gets(path: Path) -> bool:
    """Whether another process can take the flock on ``path`` right now (it lets go at once)."""
    out = subprocess.run([sys.executable, "-I", "-S", "-c", FLOCK, str(path), "try"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    assert out in ("locked\n", "busy\n"), out
    return out == "locked\n"


@contextlib.contextmanager
def held_by_another_process(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the flock on ``path`` until the block ends (or the test kills it)."""
    with subprocess.Popen([sys.executable, "-I", "-S", "-c", FLOCK, str(path), "hold"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
            yield proc
        finally:
            proc.kill()
            proc.wait(timeout=10)
