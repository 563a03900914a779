"""istio-iptables configuration files (JSON: a bare mapping of fields, or a case object as in
peers/istio-capture-golden/cases.json), read with located errors; the parsing and checking
are the model's (``simnet.model.istio_config``)."""

from __future__ import annotations

from pathlib import Path

from simnet.files import read_text
from simnet.model.istio_config import IstioConfig, parse_istio_config

__all__ = ["load_istio_config"]


def load_istio_config(path: str | Path) -> IstioConfig:
    """An IstioConfig from a JSON file; problems name the file and line."""
    return parse_istio_config(read_text(path), str(path))
