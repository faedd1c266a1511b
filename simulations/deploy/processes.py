"""The processes of a local deployment: a free port, Flower's executables, and a process group
that is stopped with everything it started."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from simulations.deploy.errors import DeploymentError
from simulations.deploy.files import HOST


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    """An executable of this environment (Flower's CLIs sit beside the interpreter)."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        raise DeploymentError(f"{name} not found beside {sys.executable} or on PATH")
    return found


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen
    log: Path
    start: int = 0  # where its output begins in ``log`` (a restarted node appends to it)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def said(self, text: str) -> bool:
        """Whether this process (not an earlier one with the same log) printed ``text``."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self.start)
                return text.encode() in f.read()
        except OSError:
            return False

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the process group (the SuperLink's and SuperNodes' children with it),
        SIGKILL after ``grace`` seconds."""
        stop_all([self], grace)

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def stop_all(processes: list[_Process], grace: float = 10.0) -> None:
    """SIGTERM to every process group at once, SIGKILL to each (its children, even if it
    exited) after it ends or ``grace`` seconds: a SuperNode takes about 2 s to shut down,
    and ten of them one after the other made closing a deployment slow."""
    for process in processes:
        if process.alive():
            _signal_group(process.popen.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(max(0.0, deadline - time.monotonic()))
        _signal_group(process.popen.pid, signal.SIGKILL)
        process.popen.wait()


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
