"""An installed, non-editable wheel carries the one copy of the bundled scenarios (the
repository's ``scenarios/``) and runs each of them.

The wheel is built from this tree and installed without dependencies into a virtual
environment that sees this machine's site-packages for them; the check runs from outside the
repository, so nothing can come from the source tree.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted(p.stem for p in (ROOT / "scenarios").glob("*.yaml"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv's python with the wheel built from this tree installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    # built from a copy, so the build leaves nothing in the work tree
    source = shutil.copytree(ROOT, tmp / "src", ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "reports", "*.egg-info", "__pycache__", ".hypothesis"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp / "dist"), str(source)],
                   check=True, cwd=tmp)
    [wheel] = (tmp / "dist").glob("simnet-*.whl")
    venv.create(tmp / "venv", system_site_packages=True, with_pip=False)
    python = tmp / "venv" / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", "--disable-pip-version-check", str(wheel)], check=True, cwd=tmp)
    return python


def test_the_wheel_ships_every_bundled_scenario_and_runs_it(installed, tmp_path):
    where = subprocess.run(
        [str(installed), "-c", "import simnet, simnet.scenario.load as l; "
         "print(simnet.__file__); print(l.BUNDLED)"],
        check=True, capture_output=True, text=True, cwd=tmp_path).stdout.split()
    package, bundled = map(Path, where)
    assert ROOT not in package.parents, "simnet was imported from the source tree"
    assert bundled.parent == package.parent and bundled.name == "scenarios"
    assert sorted(p.stem for p in bundled.glob("*.yaml")) == SCENARIOS
    for name in SCENARIOS:
        assert (bundled / f"{name}.yaml").read_bytes() == (ROOT / "scenarios" / f"{name}.yaml").read_bytes()
        subprocess.run([str(installed), "-m", "simnet", "run", name, "--reports", str(tmp_path)],
                       check=True, capture_output=True, cwd=tmp_path)
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["scenario"] == name and summary["requests"]["completed"] > 0
