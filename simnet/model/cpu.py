"""Envoy's CPU per request and per new connection, measured on the real sidecar.

The sidecar's Envoy spends CPU on every request it proxies, and more on every new downstream
connection: the TCP accept, the TLS handshake where the listener terminates TLS, the upstream
connect where it is a TCP proxy, the close. simnet measures both on the real binary per
listener kind (``simnet cpu calibrate``, ``simnet.real.cpu``) and ships the result as
``simnet/data/envoy_cpu.json``. A request costs ``service_s(kind, new_connection)`` seconds of
one Envoy worker thread: the simulator's service time for the sidecar's hop.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

from simnet.data import CPU_CALIBRATION_FILE, cpu_calibration_text
from simnet.errors import Problem, SimnetError
from simnet.model.envoy import LISTENER_KINDS

US_PER_S = 1_000_000
_TOP_FIELDS = ("envoy_version", "measured_on", "machine", "kinds", "method", "extra")
_KIND_FIELDS = ("per_request_us", "per_handshake_us", "points")


@dataclass(frozen=True)
class KindCpu:
    """One listener kind's Envoy CPU (user + system), in microseconds: ``per_request_us`` for a
    request on a reused connection, ``per_handshake_us`` more when the request opens a new
    connection. ``points`` are the repetitions' (per_request_us, per_handshake_us); the two
    figures are their medians."""

    per_request_us: float
    per_handshake_us: float
    points: tuple[tuple[float, float], ...] = ()

    def spread(self) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """The interquartile range (first and third quartile) over the repetitions of the
        per-request and of the per-handshake figure, None with fewer than two points: how
        tightly the repetitions agree around the median."""
        if len(self.points) < 2:
            return None
        req = statistics.quantiles([p[0] for p in self.points], n=4)
        hs = statistics.quantiles([p[1] for p in self.points], n=4)
        return (req[0], req[2]), (hs[0], hs[2])


@dataclass(frozen=True)
class CpuCalibration:
    """The CPU cost of one Envoy version, per listener kind, measured on one machine on one day."""

    envoy_version: str
    measured_on: str  # ISO date
    machine: dict
    kinds: dict[str, KindCpu]
    method: str = ""
    extra: dict = field(default_factory=dict)

    def service_s(self, kind: str, new_connection: bool = False) -> float:
        """Seconds of one Envoy worker thread that one request through a ``kind`` listener
        takes: the per-request CPU, plus the handshake's when it opens a new connection."""
        try:
            k = self.kinds[kind]
        except KeyError:
            raise ValueError(f"the CPU calibration has no {kind!r} listener kind "
                             f"(it has {', '.join(self.kinds)})") from None
        return (k.per_request_us + (k.per_handshake_us if new_connection else 0.0)) / US_PER_S

    def to_json(self) -> dict:
        """The calibration as the JSON object ``from_json`` reads back."""
        return {"envoy_version": self.envoy_version, "measured_on": self.measured_on,
                "machine": dict(self.machine),
                "kinds": {name: {"per_request_us": k.per_request_us,
                                 "per_handshake_us": k.per_handshake_us,
                                 "points": [list(p) for p in k.points]}
                          for name, k in self.kinds.items()},
                "method": self.method, "extra": self.extra}

    @classmethod
    def from_json(cls, data: object, source: str = "<cpu calibration>") -> CpuCalibration:
        """A calibration from its JSON object; every problem at once, each naming ``source``
        and the field (``kinds.mtls.per_request_us``) as a ``SimnetError``."""
        problems: list[Problem] = []

        def bad(where: str, message: str) -> None:
            problems.append(Problem(source, None, where, message))

        if not isinstance(data, dict):
            raise SimnetError(Problem(source, None, "", "not a simnet CPU calibration: "
                                      "expected a JSON object"))
        for key in data:
            if key not in _TOP_FIELDS:
                bad(str(key), f"unknown field (expected {', '.join(_TOP_FIELDS)})")
        version = _string(data, "envoy_version", bad)
        measured_on = _string(data, "measured_on", bad)
        if measured_on is not None:
            try:
                date.fromisoformat(measured_on)
            except ValueError:
                bad("measured_on", f"{measured_on!r} is not an ISO date (YYYY-MM-DD)")
        machine = _optional(data, "machine", dict, {}, bad)
        method = _optional(data, "method", str, "", bad)
        extra = _optional(data, "extra", dict, {}, bad)
        kinds: dict[str, KindCpu] = {}
        raw = data.get("kinds")
        if "kinds" not in data:
            bad("kinds", "missing field")
        elif not isinstance(raw, dict) or not raw:
            bad("kinds", "must be an object with at least one listener kind")
        else:
            for name, value in raw.items():
                kind = _kind(name, value, bad)
                if kind is not None:
                    kinds[name] = kind
        if problems:
            raise SimnetError(problems)
        return cls(version, measured_on, machine, kinds, method, extra)


def _string(data: dict, key: str, bad) -> str | None:
    if key not in data:
        bad(key, "missing field")
    elif not isinstance(data[key], str) or not data[key]:
        bad(key, "must be a non-empty string")
    else:
        return data[key]
    return None


def _optional(data: dict, key: str, kind: type, default, bad):
    value = data.get(key, default)
    if not isinstance(value, kind):
        bad(key, f"must be a JSON {'object' if kind is dict else 'string'}")
        return default
    return value


def _microseconds(value: object, where: str, bad) -> float | None:
    """A finite, non-negative number of microseconds, else a problem at ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        bad(where, f"{value!r} is not a number of microseconds")
    elif value < 0:
        bad(where, f"{value!r} is negative: CPU time cannot be")
    else:
        return float(value)
    return None


def _kind(name: str, value: object, bad) -> KindCpu | None:
    where = f"kinds.{name}"
    ok = True
    if name not in LISTENER_KINDS:
        bad(where, f"unknown listener kind (one of {', '.join(LISTENER_KINDS)})")
        ok = False
    if not isinstance(value, dict):
        bad(where, "must be an object with per_request_us and per_handshake_us")
        return None
    for key in value:
        if key not in _KIND_FIELDS:
            bad(f"{where}.{key}", f"unknown field (expected {', '.join(_KIND_FIELDS)})")
            ok = False
    figures = []
    for key in ("per_request_us", "per_handshake_us"):
        if key not in value:
            bad(f"{where}.{key}", "missing field")
            figures.append(None)
        else:
            figures.append(_microseconds(value[key], f"{where}.{key}", bad))
    points = []
    raw_points = value.get("points", [])
    if not isinstance(raw_points, list):
        bad(f"{where}.points", "must be a list of [per_request_us, per_handshake_us]")
        ok = False
    else:
        for i, p in enumerate(raw_points):
            if not isinstance(p, list) or len(p) != 2:
                bad(f"{where}.points[{i}]", "must be [per_request_us, per_handshake_us]")
                ok = False
                continue
            pair = tuple(_microseconds(x, f"{where}.points[{i}]", bad) for x in p)
            ok = ok and None not in pair
            points.append(pair)
    if not ok or None in figures:
        return None
    return KindCpu(figures[0], figures[1], tuple(points))


def load_cpu_calibration(text: str, source: str) -> CpuCalibration:
    """A CPU calibration from its JSON text; problems name ``source``, the line (for JSON
    syntax) and the field (for content)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SimnetError(Problem(source, e.lineno, "", f"not JSON: {e.msg}")) from None
    return CpuCalibration.from_json(data, source)


@lru_cache(maxsize=1)
def packaged_cpu_calibration() -> CpuCalibration:
    """The CPU calibration shipped with simnet (``simnet/data/envoy_cpu.json``; the data
    package reads it, so that this module does no I/O)."""
    return load_cpu_calibration(cpu_calibration_text(), CPU_CALIBRATION_FILE)
