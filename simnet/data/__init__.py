"""Data shipped with simnet: the Envoy memory and CPU calibrations (``envoy_memory.json``,
``envoy_cpu.json``) and seed 001's Route steps (``routes/``). Reading them happens here, so
that ``simnet.model`` stays free of I/O."""

from importlib import resources

__all__ = ["CALIBRATION_FILE", "CPU_CALIBRATION_FILE", "calibration_text", "cpu_calibration_text"]

CALIBRATION_FILE = "envoy_memory.json"
CPU_CALIBRATION_FILE = "envoy_cpu.json"


def calibration_text() -> str:
    """The packaged Envoy memory calibration, as JSON text."""
    return resources.files(__name__).joinpath(CALIBRATION_FILE).read_text(encoding="utf-8")


def cpu_calibration_text() -> str:
    """The packaged Envoy CPU calibration, as JSON text."""
    return resources.files(__name__).joinpath(CPU_CALIBRATION_FILE).read_text(encoding="utf-8")
