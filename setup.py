"""Build hook: ship the repository's top-level ``scenarios/`` (the one copy of the bundled
scenarios) inside the package as ``simnet/scenarios``; everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install reads scenarios/ where it is
        target = Path(self.build_lib, "simnet", "scenarios")
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted(SCENARIOS.iterdir()):
            if f.suffix in (".yaml", ".yml"):
                shutil.copy2(f, target / f.name)


setup(cmdclass={"build_py": BuildPy})
