"""What `simnet memory` answers, as data: one sidecar's Envoy memory estimate from a
calibration (refused when it was made for another Envoy than the installed one), and a new
calibration written over the old one only once it is complete."""

from __future__ import annotations

import json
from pathlib import Path

from simnet.errors import Problem, SimnetError
from simnet.files import write_atomically

MAX_CONNECTIONS = 1_000_000  # per sidecar: beyond any file-descriptor limit a container has


def packaged_calibration_path() -> Path:
    """simnet/data/envoy_memory.json, the calibration simnet ships."""
    import simnet.data

    return Path(simnet.data.__file__).with_name("envoy_memory.json")


def calibration_from(path: Path | None):
    """The calibration in ``path`` (the packaged one for None); problems name the file."""
    from simnet.model.memory import load_calibration, packaged_calibration

    if path is None:
        return packaged_calibration()
    try:
        text = path.read_text()
    except OSError as e:
        raise SimnetError(Problem(str(path), None, "--calibration", e.strerror or str(e))) from None
    return load_calibration(text, str(path))


def installed_envoy_version() -> str | None:
    """The installed Envoy's version, None when there is none to match."""
    try:
        from simnet.real.envoy import EnvoyError, envoy_version

        return envoy_version()
    except (EnvoyError, OSError):
        return None  # no Envoy here (pip install simnet without the real extra): nothing to match


def estimate(connections: int, listener: str = "tls", mappings: int = 1, margin: float = 0.10,
             calibration: Path | None = None, any_envoy_version: bool = False) -> dict:
    """Predicted Envoy memory at ``connections`` and the additional_memory_allocation_mb to
    set, beside the seed's 10 + 0.03*N rule (the keys of ``simnet memory estimate --json``)."""
    from simnet.model.memory import SEED, recommended_allocation_mb, seed_rule_mb

    cal = calibration_from(calibration)
    source = str(calibration or "packaged calibration")
    if listener not in cal.kinds:
        raise SimnetError(Problem(source, None, "kinds", f"has no {listener!r} listener kind"))
    installed = installed_envoy_version()
    if installed and installed != cal.envoy_version and not any_envoy_version:
        raise SimnetError(Problem(source, None, "envoy_version",
                                  f"calibrated for Envoy {cal.envoy_version}, but Envoy {installed} "
                                  "is installed: run `simnet memory calibrate` (or pass "
                                  "--any-envoy-version)"))
    fp = cal.footprint(listener, mappings)
    measured = max(n for n, _ in cal.kinds[listener].points) if cal.kinds[listener].points else 0
    return {
        "envoy_version": cal.envoy_version, "calibrated_on": cal.measured_on,
        "listener": listener, "connections": connections, "mappings": mappings,
        "predicted_envoy_mb": round(fp.memory_mb(connections), 3),
        "base_mb": round(fp.base_mb, 3), "per_connection_kb": fp.per_connection_kb,
        "measured_kept_after_close": {"fraction": cal.kinds[listener].retained_fraction,
                                      "after_connections": measured},
        "recommended_additional_memory_allocation_mb": recommended_allocation_mb(fp, connections, margin),
        "margin": margin,
        "seed_rule_mb": seed_rule_mb(connections),
        "seed_model_envoy_mb": round(SEED.memory_mb(connections), 3),
        "extrapolated": connections > measured,
    }


def write_calibration(cal, target: Path) -> None:
    """Write ``cal`` to ``target`` in one step: a failed write leaves the previous file intact."""
    write_atomically(target, (json.dumps(cal.to_json(), indent=1) + "\n").encode("utf-8"))
