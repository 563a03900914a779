"""Envoy sidecar memory, the container quota that must hold it, and the cell that must hold both.

Seed 002 (diego-release, Envoy 0e1d663, 2017): Envoy starts at 5-10 MB and uses ~30 KB per
concurrent connection, and that memory is not returned when connections drop, so the figure
that matters is the high-water mark; operators add ``10 + 0.03 * N`` MB to every container
(``containers.proxy.additional_memory_allocation_mb``) for N peak router connections.

simnet keeps the seed's rule for comparison and predicts today's Envoy from a calibration
measured on the real binary (``simnet memory calibrate``, ``simnet.real.memory``): per listener
kind, the private memory of a started sidecar and the private memory each concurrent connection
adds, plus what each further port mapping (one listener and one cluster) adds. The memory is
held at the high-water mark, as the seed says and as the measurements show (see
``KindCalibration``). The packaged calibration is ``simnet/data/envoy_memory.json``.

Diego never overcommits a cell for the additional allocation, and it rescales the memory it
reports for a container linearly into the app's requested quota (seed 002).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from simnet.data import CALIBRATION_FILE, calibration_text
from simnet.model.envoy import LISTENER_KINDS
from simnet.scenario.schema import EnvoyMemory, Proxy

KB_PER_MB = 1000  # the seed's rule treats 30 KB as 0.03 MB
SEED_BASE_MB = 7.5  # "between 5 and 10 MB"
SEED_PER_CONNECTION_KB = 30.0
DEFAULT_MARGIN = 0.10  # the calibrated model is checked to within 10% of the real Envoy




@dataclass(frozen=True)
class Footprint:
    """One sidecar's memory: private MB once started and KB per concurrent connection, held at
    the high-water mark (what connections took is not given back when they close)."""

    base_mb: float
    per_connection_kb: float

    def memory_mb(self, highwater: int) -> float:
        """Private memory after a high-water mark of ``highwater`` concurrent connections."""
        return self.base_mb + self.per_connection_kb * highwater / KB_PER_MB

    def connections_until(self, headroom_mb: float) -> int | None:
        """Concurrent connections that take the sidecar past ``headroom_mb`` (None: never)."""
        if self.per_connection_kb == 0:
            return None
        spare = headroom_mb - self.base_mb
        return max(0, int(spare * KB_PER_MB / self.per_connection_kb) + 1)


SEED = Footprint(SEED_BASE_MB, SEED_PER_CONNECTION_KB)
SEED_RULE = Footprint(10.0, 30.0)  # the seed's allocation rule 10 + 0.03*N, as a line
NO_PROXY = Footprint(0.0, 0.0)


def seed_rule_mb(peak_connections: int) -> int:
    """The seed's suggested additional allocation: 10 + 0.03*N, rounded to the nearest MB with
    a half rounded up, as the seed's arithmetic does (Python's ``round`` rounds a half to even:
    N = 150 would give 14, not 15)."""
    exact = Decimal(str(SEED_RULE.memory_mb(peak_connections)))
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class KindCalibration:
    """A listener kind's measured parameters and the readings they were fitted to:
    ``points`` are (connections, private MB) while connections were held, and
    ``after_close_mb`` the private MB once they were all closed again. ``retained_fraction``
    is the share of the per-connection memory still held then, after the largest count; it is
    reported, not modelled: how much tcmalloc gives back depends on how much was freed (Envoy
    1.40 kept all of it for TLS at every count, and all of mTLS's after 1,500 connections but
    79% after 6,000), so the model holds the high-water mark, an upper bound."""

    base_mb: float
    per_connection_kb: float
    retained_fraction: float
    points: tuple[tuple[int, float], ...] = ()
    after_close_mb: float | None = None


@dataclass(frozen=True)
class Calibration:
    """The memory of one Envoy version, measured on one machine on one day."""

    envoy_version: str
    measured_on: str  # ISO date
    machine: dict
    kinds: dict[str, KindCalibration]
    per_mapping_kb: float = 0.0  # each port mapping beyond the first: a listener and a cluster
    mapping_points: tuple[tuple[int, float], ...] = ()  # (mappings, private MB at start)
    method: str = ""
    extra: dict = field(default_factory=dict)

    def footprint(self, kind: str, mappings: int = 1) -> Footprint:
        """The sidecar's footprint for ``kind`` with ``mappings`` port mappings."""
        k = self.kinds[kind]
        return Footprint(k.base_mb + self.per_mapping_kb * max(0, mappings - 1) / KB_PER_MB,
                         k.per_connection_kb)

    def to_json(self) -> dict:
        data = asdict(self)
        data["kinds"] = {name: asdict(k) for name, k in self.kinds.items()}
        return data

    @classmethod
    def from_json(cls, data: dict) -> Calibration:
        kinds = {name: KindCalibration(
            k["base_mb"], k["per_connection_kb"], k["retained_fraction"],
            tuple(tuple(p) for p in k.get("points", ())), k.get("after_close_mb"))
            for name, k in data["kinds"].items()}
        unknown = set(kinds) - set(LISTENER_KINDS)
        if unknown:
            raise ValueError(f"unknown listener kinds {sorted(unknown)}")
        return cls(data["envoy_version"], data["measured_on"], data.get("machine", {}), kinds,
                   data.get("per_mapping_kb", 0.0),
                   tuple(tuple(p) for p in data.get("mapping_points", ())),
                   data.get("method", ""), data.get("extra", {}))


def load_calibration(text: str, source: str) -> Calibration:
    """A calibration from its JSON text; problems name ``source`` (and the line, for JSON)."""
    from simnet.errors import Problem, SimnetError

    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SimnetError(Problem(source, e.lineno, "", f"not JSON: {e.msg}")) from None
    try:
        return Calibration.from_json(data)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        raise SimnetError(Problem(source, None, "", f"not a simnet memory calibration: {what}")) from None


@lru_cache(maxsize=1)
def packaged_calibration() -> Calibration:
    """The calibration shipped with simnet (``simnet/data/envoy_memory.json``; the data
    package reads it, so that this module does no I/O)."""
    return load_calibration(calibration_text(), CALIBRATION_FILE)


# --- fitting ---------------------------------------------------------------------------------


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares intercept and slope of y over x."""
    n = len(points)
    if n < 2:
        raise ValueError("a line needs at least two points")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        raise ValueError("a line needs two different x values")
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - slope * mx, slope


def fit_kind(points: list[tuple[int, float]], after_close_mb: float) -> KindCalibration:
    """Fit a kind's base and per-connection memory to (connections, private MB) readings, and
    its retained fraction to the reading after closing every connection."""
    base, slope = fit_line([(float(n), mb) for n, mb in points])
    peak_n, peak_mb = max(points)
    grown = peak_mb - base
    retained = (after_close_mb - base) / grown if grown > 0 else 1.0
    return KindCalibration(round(base, 3), round(slope * KB_PER_MB, 3),
                           round(min(1.0, max(0.0, retained)), 3),
                           tuple((n, round(mb, 3)) for n, mb in points), round(after_close_mb, 3))


# --- planning --------------------------------------------------------------------------------


def listener_kind(proxy: Proxy) -> str:
    """The kind of the Diego sidecar's listeners: the executor's TLS TCP proxy, with client
    certificates when ``require_and_verify_client_certificates``."""
    return "mtls" if proxy.require_and_verify_client_certificates else "tls"


def footprint(memory: EnvoyMemory, kind: str, mappings: int,
              calibration: Calibration | None = None) -> Footprint:
    """A sidecar's footprint under a scenario's memory model."""
    if memory.model == "manual":
        return Footprint(memory.base_mb, memory.per_connection_kb)
    if memory.model == "seed":
        return SEED
    return (calibration or packaged_calibration()).footprint(kind, mappings)


def recommended_allocation_mb(fp: Footprint, peak_connections: int,
                              margin: float = DEFAULT_MARGIN) -> int:
    """The additional allocation that holds the sidecar at ``peak_connections`` (its high-water
    mark), with a safety margin for the model's error, rounded up to whole MB."""
    return math.ceil(fp.memory_mb(peak_connections) * (1 + margin))


def additional_allocation_mb(proxy: Proxy, mappings: int = 1,
                             calibration: Calibration | None = None) -> int:
    """The MB the cell adds to every container's limit (0 without a proxy); ``auto``
    recommends for ``expected_peak_connections`` under the scenario's memory model (the
    seed's model gives the seed's rule, 10 + 0.03*N)."""
    if not proxy.enabled:
        return 0
    if proxy.additional_memory_allocation_mb != "auto":
        return proxy.additional_memory_allocation_mb
    if proxy.memory.model == "seed":
        return seed_rule_mb(proxy.expected_peak_connections)
    fp = footprint(proxy.memory, listener_kind(proxy), mappings, calibration)
    return recommended_allocation_mb(fp, proxy.expected_peak_connections)


def instances_that_fit(cells: int, cell_memory_mb: int, quota_mb: int, additional_mb: int) -> int:
    """How many instances of one size a set of cells holds without overcommitting (the rep
    reserves the quota plus the additional allocation for each container)."""
    need = quota_mb + additional_mb
    return cells * (cell_memory_mb // need) if need > 0 else 0
