"""`simnet iptables generate istio|trace`: capture rules written as istio-iptables writes them,
and one connection's first packet traced through a ruleset."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from simnet.cli.output import COMMAND_LINE, bad_argument, console
from simnet.cli.params import ip_address, ip_version
from simnet.errors import Problem, SimnetError
from simnet.model.netfilter import CT_STATES

iptables_app = typer.Typer(no_args_is_help=True,
                           help="Capture rules: generate them as the real tools do, trace connections through them.")
generate_app = typer.Typer(no_args_is_help=True, help="Generate a capture ruleset.")
iptables_app.add_typer(generate_app, name="generate")

Direction = Literal["outbound", "inbound"]
Proto = Literal["tcp", "udp"]
CtState = Literal[CT_STATES]  # INVALID, NEW, ESTABLISHED, ...


@generate_app.command("istio")
def generate_istio(
    config: Annotated[Path, typer.Option("--config", help=
        "JSON with istio-iptables' configuration fields (a bare mapping or a {name, config} case).")],
    dry_run: Annotated[bool, typer.Option("--dry-run-form", help=
        "Print istio-iptables' dry-run output (both families, with the iptables-save echoes) "
        "instead of the IPv4 then IPv6 restore input.")] = False,
) -> None:
    """Istio's capture rules (istio-iptables) for a configuration, in iptables-restore form."""
    from simnet.model.capture import istio_capture
    from simnet.scenario.istio_config import load_istio_config

    out = istio_capture(load_istio_config(config))
    sys.stdout.write(out.golden() if dry_run else out.v4 + (out.v6 or ""))


def _names(values: list[str]) -> dict[str, int]:
    """--name NAME=ID, repeated: user and group names for owner matches."""
    out = {}
    for v in values:
        name, _, number = v.partition("=")
        if not name or not number.isdigit():
            raise bad_argument("--name", f"{v!r} is not NAME=ID")
        out[name] = int(number)
    return out


@iptables_app.command("trace")
def trace(
    rules: Annotated[Path, typer.Argument(metavar="RULES", help=
        "Ruleset: iptables-save, iptables-restore or dry-run text.")],
    direction: Annotated[Direction, typer.Option(help=
        "outbound (made by a local process) or inbound.")] = "outbound",
    proto: Annotated[Proto, typer.Option(help="tcp or udp.")] = "tcp",
    src: Annotated[str, typer.Option(help="Source address.")] = "",
    dst: Annotated[str, typer.Option(help="Destination address.")] = "",
    dport: Annotated[int | None, typer.Option(min=1, max=65535, help="Destination port.")] = None,
    sport: Annotated[int, typer.Option(min=1, max=65535, help="Source port.")] = 40000,
    uid: Annotated[int | None, typer.Option(min=0, help="Owner uid of the local socket (outbound).")] = None,
    gid: Annotated[int | None, typer.Option(min=0, help="Owner gid of the local socket (outbound).")] = None,
    in_if: Annotated[str, typer.Option("--in-if", help="Interface an inbound connection arrives on.")] = "eth0",
    out_if: Annotated[str, typer.Option("--out-if", help=
        "Interface the destination routes out of (lo is used for local destinations).")] = "eth0",
    in_addr: Annotated[str, typer.Option("--in-addr", help=
        "First address of --in-if, where REDIRECT sends inbound traffic (default: --dst).")] = "",
    local: Annotated[list[str], typer.Option("--local", help=
        "An address of this host besides loopback (repeatable); inbound, --in-addr or --dst "
        "counts as one.")] = [],  # noqa: B006
    mark: Annotated[int, typer.Option(min=0, max=0xFFFFFFFF, help="Initial packet mark.")] = 0,
    server_uid: Annotated[int, typer.Option(min=0, help=
        "Owner uid of the listening socket (its SYN-ACK passes OUTPUT owner rules).")] = 0,
    server_gid: Annotated[int, typer.Option(min=0, help="Owner gid of the listening socket.")] = 0,
    ctstate: Annotated[CtState, typer.Option(help="Conntrack state of the packet.")] = "NEW",
    name: Annotated[list[str], typer.Option("--name", help=
        "NAME=ID for user/group names in owner matches (repeatable).")] = [],  # noqa: B006
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Where a connection's first packet goes under a ruleset, and the exact rules that fired."""
    from simnet.model.netfilter import load_for_family
    from simnet.model.packet import Connection
    from simnet.model.packet_path import trace as trace_packet

    missing = [Problem(COMMAND_LINE, None, opt, "is required")
               for opt, value in (("--dst", dst), ("--src", src), ("--dport", dport)) if not value]
    if missing:
        raise SimnetError(missing)
    conn = Connection(direction, ip_address(dst, "--dst"), dport, ip_address(src, "--src"), sport, proto,
                      uid, gid, in_if=in_if, out_if=out_if,
                      in_addr=ip_address(in_addr, "--in-addr") if in_addr else "",
                      local_addrs=tuple(ip_address(a, "--local") for a in local)
                      # an inbound connection is addressed to this host (or --in-addr is its address)
                      + ((ip_address(in_addr or dst, "--dst"),) if direction == "inbound" else ()),
                      mark=mark, ctstate=ctstate, server_uid=server_uid, server_gid=server_gid)
    if len({conn.family, ip_version(src)} | ({ip_version(in_addr)} if in_addr else set())) != 1:
        raise bad_argument("--src", "--src and --dst are different IP versions")
    try:
        text = rules.read_text()
    except OSError as e:
        raise SimnetError(Problem(str(rules), None, "", e.strerror or str(e))) from None
    outcome = trace_packet(load_for_family(text, str(rules), conn.family), conn, _names(name))
    if as_json:
        sys.stdout.write(json.dumps(outcome.to_json(), indent=2) + "\n")
        return
    j = outcome.to_json()
    console.print(f"[bold]{j['verdict']}[/bold]" + (f" -> {j['destination']}"
                  f" ({'this host' if j['local'] else 'elsewhere'})" if j["destination"] else ""))
    for step in j["path"]:
        console.print(f"  {step}", markup=False)
