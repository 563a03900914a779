"""The scenarios (and the sample BOSH manifest) shipped with simnet, and how a name on the
command line finds one; apart from the loaders so every loader can name them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BUNDLED", "DEFAULT_SCENARIO", "bundled", "scenario_path"]



def _bundled_directory() -> Path:
    """The one copy of the bundled scenarios: a wheel ships the repository's ``scenarios/``
    inside the package (``setup.py`` copies it to ``simnet/scenarios``); a source tree or an
    editable install reads the repository's own."""
    package = Path(__file__).resolve().parent.parent
    shipped = package / "scenarios"
    return shipped if shipped.is_dir() else package.parent / "scenarios"


BUNDLED = _bundled_directory()
DEFAULT_SCENARIO = "diego-route-integrity"


def bundled(name: str = DEFAULT_SCENARIO) -> Path:
    """Path of a scenario shipped with simnet."""
    return BUNDLED / f"{name}.yaml"


def scenario_path(value: str | Path) -> Path:
    """A scenario file, or the name of a bundled scenario."""
    path = Path(value)
    if not path.exists() and bundled(str(value)).exists():
        return bundled(str(value))
    return path
