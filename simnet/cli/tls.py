"""`simnet tls check`: the command line of :mod:`simnet.tls_check` (the files and settings of
one router-to-sidecar handshake) and its table."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from simnet.cli.output import console
from simnet.cli.params import csv, iso_time

tls_app = typer.Typer(no_args_is_help=True,
                      help="Router-to-sidecar TLS: predict a handshake, or run it for real.")

TLSVersion = Literal["TLSv1.2", "TLSv1.3"]
Router = Literal["gorouter", "openssl"]
Server = Literal["envoy", "openssl"]


@tls_app.command("check")
def check(
    server_cert: Annotated[Path, typer.Option(help="The sidecar's certificate chain (PEM, leaf first).")],
    server_key: Annotated[Path, typer.Option(help="The sidecar's private key (PEM).")],
    ca: Annotated[Path, typer.Option(help="CA bundle the router trusts (PEM).")],
    expect_san: Annotated[str | None, typer.Option(help=
        "Name the router expects in the sidecar's certificate (gorouter: the instance guid).")] = None,
    client_cert: Annotated[Path | None, typer.Option(help="The router's client certificate chain (PEM).")] = None,
    client_key: Annotated[Path | None, typer.Option(help="The router's client key (PEM).")] = None,
    require_client_cert: Annotated[bool, typer.Option(help=
        "The sidecar requires a client certificate "
        "(containers.proxy.require_and_verify_client_certificates).")] = False,
    client_ca: Annotated[Path | None, typer.Option(help=
        "CAs the sidecar trusts for client certificates (containers.proxy.trusted_ca_certificates).")] = None,
    verify_client_san: Annotated[list[str], typer.Option(help=
        "A SAN the client certificate must carry (containers.proxy.verify_subject_alt_name; repeatable).")] = [],  # noqa: B006
    alpn: Annotated[str, typer.Option(help="Protocols the router offers, e.g. h2,http/1.1.")] = "",
    http2: Annotated[bool, typer.Option("--http2/--no-http2", help=
        "The sidecar offers h2 and http/1.1 (containers.proxy.enable_http2).")] = True,
    max_tls_version: Annotated[TLSVersion, typer.Option(help=
        "Highest version the router offers: TLSv1.2 or TLSv1.3.")] = "TLSv1.3",
    router: Annotated[Router, typer.Option(help=
        "Whose verification the model applies to the sidecar's certificate: gorouter (Go) or openssl.")] = "gorouter",
    server: Annotated[Server, typer.Option(help="The sidecar's TLS stack: envoy (BoringSSL) or openssl.")] = "envoy",
    at: Annotated[str | None, typer.Option(callback=iso_time, help=
        "When the handshake happens (ISO 8601; default now).")] = None,
    real: Annotated[bool, typer.Option("--real", help=
        "Also run the handshake for real on 127.0.0.1 (OpenSSL as the router, a real Envoy or OpenSSL "
        "server) and compare it with the model; exit 1 if they disagree.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Predict a router-to-sidecar TLS handshake: its outcome, the alert, ALPN and gorouter's status."""
    from simnet.tls_check import load_case, predict, run

    when = at or datetime.now(UTC)  # --at is a datetime: iso_time made it one
    case = load_case(server_cert=server_cert, server_key=server_key, ca=ca, expect_san=expect_san,
                     client_cert=client_cert, client_key=client_key,
                     require_client_cert=require_client_cert, client_ca=client_ca,
                     verify_client_san=verify_client_san, alpn=csv(alpn), http2=http2,
                     max_tls_version=max_tls_version, router=router, server=server)
    report, agrees = run(case, when) if real else (predict(case, when), True)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        console.print(handshake_table(report))
        if "model" in report:
            console.print("model and real agree" if report["agrees"]
                          else "[bold red]model and real DISAGREE[/]")
    if not agrees:
        raise typer.Exit(1)


def handshake_table(report: dict) -> Table:
    """The handshake's fields, and the model's beside them for a real run."""
    t = Table(title="TLS handshake" + (" (real)" if "model" in report else " (model)"))
    t.add_column("")
    t.add_column("real" if "model" in report else "model")
    if "model" in report:
        t.add_column("model")
    keys = ("handshake", "reason", "rejected_by", "alert", "verify_error", "tls_version", "alpn",
            "router_status", "router_retries")

    def cell(r: dict, k: str) -> str:
        v = r.get(k)
        if isinstance(v, dict):
            return f"{v['code']} {v['message'] or ''}".strip()
        return "-" if v is None else str(v)

    for k in keys:
        t.add_row(k, cell(report, k), *((cell(report["model"], k),) if "model" in report else ()))
    return t
