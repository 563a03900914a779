"""The catalogue of ``simnet analyze`` messages: stable codes, levels, templates, docs anchors.

Like ``istioctl analyze``'s message catalogue (``galley/pkg/config/analysis/msg/messages.yaml``),
one YAML file in the package holds every message; docs/analyze.md has a section per code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

from ruamel.yaml import YAML

LEVELS = ("info", "warning", "error")  # in increasing order of severity
DOCS = "docs/analyze.md"


@dataclass(frozen=True)
class Message:
    code: str  # SIM0001
    name: str  # ReservedPort
    level: str  # one of LEVELS
    template: str  # str.format fields the check fills in
    anchor: str  # section of docs/analyze.md

    @property
    def docs(self) -> str:
        return f"{DOCS}#{self.anchor}"

    def text(self, **params) -> str:
        return self.template.format(**params)


@lru_cache(maxsize=1)
def catalogue() -> dict[str, Message]:
    """Every message, by code, in code order."""
    data = YAML(typ="safe").load(files("simnet.analysis").joinpath("catalogue.yaml").read_text())
    return {code: Message(code, **fields) for code, fields in sorted(data.items())}


def severity(level: str) -> int:
    return LEVELS.index(level)
