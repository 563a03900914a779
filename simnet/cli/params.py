"""Parsing and checking of option values the types alone cannot say: ranges, ISO 8601 times,
comma lists, port lists, addresses. Each raises a problem naming the option, which
:mod:`simnet.cli.output` prints in the project's form."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import typer

from simnet.cli.output import bad_argument

N = TypeVar("N", int, float)


def within(low: N, high: N, *, what: str = "", note: str = "") -> Callable[[N | None], N | None]:
    """An option callback: the value must be low-high. The message names the value when
    ``what`` says what it is (``-5 is not a connection count 0-1,000,000``), else it is
    ``must be 1-3000`` (and ``note``)."""

    def check(value: N | None) -> N | None:
        if value is not None and not low <= value <= high:
            raise typer.BadParameter(f"{value} is not {what} {low:,}-{high:,}" if what
                                     else f"must be {low:g}-{high:g}{note}")
        return value

    return check


def iso_time(value: str | None) -> datetime | None:
    """An option callback: an ISO 8601 time; one without a zone is UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso_time_with_zone(value: str | None) -> datetime | None:
    """An option callback: an ISO 8601 time that says its zone."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time with a zone, e.g. "
                                 "2026-12-01T09:00:00Z")
    return moment


def csv(value: str) -> list[str]:
    """A comma list, items stripped; the empty string is no items."""
    return [p.strip() for p in value.split(",")] if value else []


def port_list(value: str) -> list[int]:
    """An argument callback: PORTS, comma-separated port numbers 1-65535."""
    ports = []
    for k, part in enumerate(value.split(",")):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            raise bad_argument(f"PORTS[{k}]", f"{part!r} is not a port number 1-65535")
        ports.append(int(part))
    return ports


def ip_address(value: str, option: str) -> str:
    """An IPv4 or IPv6 address, normalised."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise bad_argument(option, f"{value!r} is not an IP address") from None


def ip_version(address: str) -> int:
    """4 or 6, for an address ``ip_address`` accepted."""
    return ipaddress.ip_address(address).version

