"""The twin's own processes (``real/twin/main.go``: app, router, load) run in a namespace.

Each is started with its JSON config written to a file, inside a network namespace through
``nsenter --net`` (which execs in place, so the pid is the process's own), and is ready when it
prints ``ready``. ``stop()`` sends SIGTERM, on which the process writes its stats file and exits;
SIGKILL follows if it does not within a grace period. Processes still running when the
interpreter exits are killed (``atexit``), so a failed emulation leaves none behind.
"""

from __future__ import annotations

import atexit
import json
import select
import signal
import subprocess
import time
from pathlib import Path

from simnet.errors import Error
from simnet.real.netns import Namespace

STOP_GRACE_S = 5.0
_live: set[subprocess.Popen] = set()


class ProcessError(Error, RuntimeError):
    """A twin process that did not start, or died."""


class TwinProcess:
    """One running twin process; ``stats()`` is what it wrote when it stopped."""

    def __init__(self, binary: Path, mode: str, config: dict, directory: Path, name: str, *,
                 namespace: Namespace | None = None, extra: tuple[str, ...] = (),
                 ready_timeout_s: float = 20.0):
        self.name = name
        self.directory = directory
        self.config_file = directory / f"{name}.json"
        self.stats_file = directory / f"{name}.stats.json"
        self.log_file = directory / f"{name}.log"
        self.config_file.write_text(json.dumps(config))
        out_flag = "--out" if mode == "load" else "--stats"
        enter = ["nsenter", f"--net={namespace.path}", "--"] if namespace else []
        argv = [*enter, str(binary), mode, "--config", str(self.config_file),
                out_flag, str(self.stats_file), *extra]
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=log)
        _live.add(self.proc)
        if mode != "load":
            self._wait_ready(ready_timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                if line.strip() == b"ready":
                    return
            if self.proc.poll() is not None:
                break
        self.kill()
        raise ProcessError(f"{self.name} did not start: {self.log().strip() or line!r}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        """Wait for the process to end by itself; its exit code."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ProcessError(f"{self.name} still running after {timeout_s:.0f} s") from None

    def stop(self) -> dict | None:
        """SIGTERM, wait, and the stats it wrote (None if it wrote none)."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.kill()
        _live.discard(self.proc)
        return self.stats()

    def kill(self) -> None:
        """SIGKILL (a crash), no stats."""
        if self.running():
            self.proc.kill()
        self.proc.wait()
        _live.discard(self.proc)

    def stats(self) -> dict | None:
        try:
            return json.loads(self.stats_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        if proc.poll() is None:
            proc.kill()
