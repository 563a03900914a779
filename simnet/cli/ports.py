"""`simnet ports`: Diego's proxy port allocation for a container's app ports, and the
CF_INSTANCE_PORTS it gets, as a table or JSON."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from simnet.cli.output import bad_argument, console
from simnet.cli.params import port_list
from simnet.errors import PortRangeExhausted


def ports(
    app_ports: Annotated[str, typer.Argument(metavar="PORTS", callback=port_list, help=
        "App ports, e.g. 8080,9999,2222.")],
    no_unproxied: Annotated[bool, typer.Option("--no-unproxied", help=
        "enable_unproxied_port_mappings: false (only TLS proxy ports are mapped).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Diego's proxy port allocation and CF_INSTANCE_PORTS for a container's app ports."""
    from simnet.model.ports import cf_instance_ports_json, instance_ports, proxy_ports

    try:
        pp = proxy_ports(app_ports)
    except (ValueError, PortRangeExhausted) as e:
        raise bad_argument("PORTS", str(e)) from None
    entries = instance_ports(pp.app_ports, pp, unproxied=not no_unproxied)
    result = {
        "app_ports": list(pp.app_ports),
        "mappings": [{"app_port": m.app, "proxy_port": m.proxy} for m in pp.mappings],
        "admin": {"address": "127.0.0.1", "port": pp.admin},
        "CF_INSTANCE_PORTS": entries,
        "CF_INSTANCE_PORTS_env": cf_instance_ports_json(entries),
    }
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    t = Table(title="Envoy listeners")
    t.add_column("proxy port (TLS)", justify="right")
    t.add_column("app port", justify="right")
    for m in pp.mappings:
        t.add_row(str(m.proxy), str(m.app) + ("  (C2C TLS)" if m.proxy == 61443 else ""))
    t.add_row(str(pp.admin), "admin API, 127.0.0.1 only")
    console.print(t)
    console.print("CF_INSTANCE_PORTS=" + result["CF_INSTANCE_PORTS_env"], markup=False,
                  soft_wrap=True)
