"""Errors the user can act on: each names where the problem is and what it is.

The CLI prints them as ``FILE:LINE: field.path: message`` and exits with code 2, never
with a traceback (see ``simnet.cli``).
"""

from __future__ import annotations

from dataclasses import dataclass

Loc = tuple[str | int, ...]
"""A location in an input: the path of keys and indices from its root (``("apps", 0, "ports")``)."""


class Error(Exception):
    """The root of every error simnet raises: ``except simnet.errors.Error`` catches them all."""


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with an input, located as precisely as we know."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class SimnetError(Error):
    """Bad input: carries every problem found, so the user fixes them all in one pass; the CLI
    prints them as located lines and exits with ``exit_code``."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | Problem):
        self.problems = [problems] if isinstance(problems, Problem) else sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class PortRangeExhausted(Error, ValueError):
    """The proxy port range 61001-65534 has no free port left for this container."""
