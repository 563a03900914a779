"""The `simnet` command.

Bad input never shows a traceback: it prints ``FILE:LINE: field.path: message`` lines on
stderr and exits with code 2 (usage errors from typer/click exit 2 as well).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from simnet.errors import PortRangeExhausted, Problem, SimnetError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Model the network path of sidecar-proxy platforms and check it against real components.",
)
console = Console()


def _fail(e: SimnetError) -> None:
    sys.stderr.write("".join(f"{p}\n" for p in e.problems))
    raise typer.Exit(e.exit_code)


class _LazyProgress:
    """A progress bar that only appears once a run has taken longer than a second."""

    def __init__(self, label: str):
        self.label, self.start, self.bar, self.task = label, time.monotonic(), None, None

    def __call__(self, fraction: float) -> None:
        if self.bar is None:
            if time.monotonic() - self.start < 1.0 or not console.is_terminal:
                return
            from rich.progress import BarColumn, Progress, TimeRemainingColumn

            self.bar = Progress("[progress.description]{task.description}", BarColumn(),
                                "{task.percentage:>3.0f}%", TimeRemainingColumn(),
                                console=console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=1.0)
        self.bar.update(self.task, completed=fraction)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _summary_table(out) -> Table:
    m = out.metrics
    s = m.summary()
    t = Table(title=f"simnet run: {out.scenario.name} (seed {out.scenario.seed}, "
                    f"{out.scenario.duration_s:g} s simulated, {out.wall_s:.2f} s wall)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    req = s["requests"]
    t.add_row("requests issued", f"{req['issued']:,}")
    t.add_row("completed / in flight at end", f"{req['completed']:,} / {req['in_flight']:,}")
    for status, n in req["outcomes"].items():
        t.add_row(f"  status {status}", f"{n:,}")
    t.add_row("misdelivered (wrong app answered)", f"{req['misdelivered']:,}")
    t.add_row("retries / endpoints pruned", f"{req['retries']:,} / {s['endpoints_pruned']:,}")
    for q in ("p50", "p95", "p99"):
        v = s["latency_ms"][q]
        t.add_row(f"latency {q}", "-" if v is None else f"{v:.2f} ms")
    t.add_row("connections opened", f"{s['connections_opened']:,}")
    t.add_row("TLS handshakes", f"{s['tls_handshakes']:,}")
    return t


def _instance_table(out) -> Table:
    t = Table(title="sidecars")
    for col in ("instance", "guid", "cell", "peak conns", "peak Envoy MB", "quota MB", "OOM kills"):
        t.add_column(col, justify="right" if col not in ("instance", "guid") else "left")
    for i in out.metrics.instances:
        t.add_row(f"{i.app}/{i.index}", i.guid[:8], str(i.cell), f"{i.peak_connections:,}",
                  f"{i.peak_memory_mb:.2f}", f"{i.quota_mb:g}", str(i.oom_kills))
    return t


@app.command()
def run(
    scenario: Annotated[Optional[Path], typer.Argument(
        help="Scenario file; the bundled default scenario when omitted.")] = None,
    reports: Annotated[Path, typer.Option(help="Directory for reports/<scenario-name>/.")] = Path("reports"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only where the report went.")] = False,
) -> None:
    """Simulate a scenario and write its report (HTML, summary.json, figures)."""
    from simnet.lenses import run as run_pipeline
    from simnet.scenario.load import bundled, scenario_path

    path = scenario_path(scenario) if scenario is not None else bundled()
    progress = _LazyProgress(f"simulating {path.name}")
    try:
        out = run_pipeline(path, reports, progress)
    except SimnetError as e:
        _fail(e)
    finally:
        progress.close()
    if not quiet:
        console.print(_summary_table(out))
        console.print(_instance_table(out))
    report = out.report_files[0].parent if out.report_files else reports
    console.print(f"report: {report / 'report.html'}")


@app.command()
def compare(
    scenarios: Annotated[list[Path], typer.Argument(metavar="SCENARIO...", help=
        "Two or more scenario files (or bundled names) to run and show side by side.")],
    reports: Annotated[Path, typer.Option(help="Directory for the reports.")] = Path("reports"),
) -> None:
    """Run variants of a deployment and write a side-by-side report, reports/<a>-vs-<b>/."""
    from simnet.lenses import compare as compare_pipeline
    from simnet.scenario.load import scenario_path

    if len(scenarios) < 2:
        _fail(SimnetError(Problem("<command line>", None, "SCENARIO", "give at least two scenarios")))
    progress = _LazyProgress("simulating variants")
    try:
        outputs, files = compare_pipeline([scenario_path(p) for p in scenarios], reports, progress)
    except SimnetError as e:
        _fail(e)
    finally:
        progress.close()
    t = Table(title="side by side")
    t.add_column("")
    for o in outputs:
        t.add_column(o.scenario.name, justify="right")
    rows = [("completed", lambda s: f"{s['requests']['completed']:,}"),
            ("misdelivered", lambda s: f"{s['requests']['misdelivered']:,}"),
            ("retries", lambda s: f"{s['requests']['retries']:,}"),
            ("endpoints pruned", lambda s: f"{s['endpoints_pruned']:,}")]
    summaries = [o.metrics.summary() for o in outputs]
    for label, cell in rows:
        t.add_row(label, *(cell(s) for s in summaries))
    for code in sorted({c for o in outputs for c in o.metrics.outcomes}):
        t.add_row(f"status {code}", *(f"{o.metrics.outcomes.get(code, 0):,}" for o in outputs))
    console.print(t)
    console.print(f"report: {files[0]}")


@app.command()
def schema(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to a file.")] = None,
) -> None:
    """Print the scenario JSON Schema (for editor completion and validation)."""
    from simnet.scenario.schema import Scenario

    text = json.dumps(Scenario.model_json_schema(), indent=2, sort_keys=True) + "\n"
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text)


def _port_list(value: str) -> list[int]:
    ports = []
    for k, part in enumerate(value.split(",")):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            raise SimnetError(Problem("<command line>", None, f"PORTS[{k}]",
                                      f"{part!r} is not a port number 1-65535"))
        ports.append(int(part))
    return ports


@app.command()
def ports(
    app_ports: Annotated[str, typer.Argument(metavar="PORTS", help="App ports, e.g. 8080,9999,2222.")],
    no_unproxied: Annotated[bool, typer.Option("--no-unproxied", help=
        "enable_unproxied_port_mappings: false (only TLS proxy ports are mapped).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Diego's proxy port allocation and CF_INSTANCE_PORTS for a container's app ports."""
    from simnet.model.ports import cf_instance_ports_json, instance_ports, proxy_ports

    try:
        requested = _port_list(app_ports)
        try:
            pp = proxy_ports(requested)
        except (ValueError, PortRangeExhausted) as e:
            raise SimnetError(Problem("<command line>", None, "PORTS", str(e))) from None
    except SimnetError as e:
        _fail(e)
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


tls_app = typer.Typer(no_args_is_help=True,
                      help="Router-to-sidecar TLS: predict a handshake, or run it for real.")
app.add_typer(tls_app, name="tls")


def _csv(value: str) -> list[str]:
    return [p.strip() for p in value.split(",")] if value else []


@tls_app.command("check")
def tls_check(
    server_cert: Annotated[Path, typer.Option(help="The sidecar's certificate chain (PEM, leaf first).")],
    server_key: Annotated[Path, typer.Option(help="The sidecar's private key (PEM).")],
    ca: Annotated[Path, typer.Option(help="CA bundle the router trusts (PEM).")],
    expect_san: Annotated[Optional[str], typer.Option(help=
        "Name the router expects in the sidecar's certificate (gorouter: the instance guid).")] = None,
    client_cert: Annotated[Optional[Path], typer.Option(help="The router's client certificate chain (PEM).")] = None,
    client_key: Annotated[Optional[Path], typer.Option(help="The router's client key (PEM).")] = None,
    require_client_cert: Annotated[bool, typer.Option(help=
        "The sidecar requires a client certificate (containers.proxy.require_and_verify_client_certificates).")] = False,
    client_ca: Annotated[Optional[Path], typer.Option(help=
        "CAs the sidecar trusts for client certificates (containers.proxy.trusted_ca_certificates).")] = None,
    verify_client_san: Annotated[list[str], typer.Option(help=
        "A SAN the client certificate must carry (containers.proxy.verify_subject_alt_name; repeatable).")] = [],  # noqa: B006
    alpn: Annotated[str, typer.Option(help="Protocols the router offers, e.g. h2,http/1.1.")] = "",
    http2: Annotated[bool, typer.Option("--http2/--no-http2", help=
        "The sidecar offers h2 and http/1.1 (containers.proxy.enable_http2).")] = True,
    max_tls_version: Annotated[str, typer.Option(help="Highest version the router offers: TLSv1.2 or TLSv1.3.")] = "TLSv1.3",
    router: Annotated[str, typer.Option(help=
        "Whose verification the model applies to the sidecar's certificate: gorouter (Go) or openssl.")] = "gorouter",
    server: Annotated[str, typer.Option(help="The sidecar's TLS stack: envoy (BoringSSL) or openssl.")] = "envoy",
    at: Annotated[Optional[str], typer.Option(help="When the handshake happens (ISO 8601; default now).")] = None,
    real: Annotated[bool, typer.Option("--real", help=
        "Also run the handshake for real on 127.0.0.1 (OpenSSL as the router, a real Envoy or OpenSSL "
        "server) and compare it with the model; exit 1 if they disagree.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Predict a router-to-sidecar TLS handshake: its outcome, the alert, ALPN and gorouter's status."""
    from datetime import datetime, timezone

    from simnet.tls_check import load_case, predict, run

    try:
        problems = []
        if max_tls_version not in ("TLSv1.2", "TLSv1.3"):
            problems.append(Problem("<command line>", None, "--max-tls-version", "must be TLSv1.2 or TLSv1.3"))
        if router not in ("gorouter", "openssl"):
            problems.append(Problem("<command line>", None, "--router", "must be gorouter or openssl"))
        if server not in ("envoy", "openssl"):
            problems.append(Problem("<command line>", None, "--server", "must be envoy or openssl"))
        when = datetime.now(timezone.utc)
        if at is not None:
            try:
                when = datetime.fromisoformat(at)
                when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
            except ValueError:
                problems.append(Problem("<command line>", None, "--at", f"{at!r} is not an ISO 8601 time"))
        if problems:
            raise SimnetError(problems)
        case = load_case(server_cert=server_cert, server_key=server_key, ca=ca, expect_san=expect_san,
                         client_cert=client_cert, client_key=client_key,
                         require_client_cert=require_client_cert, client_ca=client_ca,
                         verify_client_san=verify_client_san, alpn=_csv(alpn), http2=http2,
                         max_tls_version=max_tls_version, router=router, server=server)
        if real:
            from simnet.real.envoy import EnvoyError

            try:
                report, agrees = run(case, when)
            except EnvoyError as e:
                raise SimnetError(Problem(str(server_cert), None, "--server-cert",
                                          f"the real Envoy refused this configuration: {e}")) from None
        else:
            report, agrees = predict(case, when), True
    except SimnetError as e:
        _fail(e)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        _tls_table(report)
    if not agrees:
        raise typer.Exit(1)


def _tls_table(report: dict) -> None:
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
    console.print(t)
    if "model" in report:
        console.print("model and real agree" if report["agrees"] else "[bold red]model and real DISAGREE[/]")


memory_app = typer.Typer(no_args_is_help=True,
                         help="Envoy sidecar memory: calibrate on the real Envoy, estimate for planning.")
app.add_typer(memory_app, name="memory")
MAX_CONNECTIONS = 1_000_000  # per sidecar: beyond any file-descriptor limit a container has


def _calibration(path: Optional[Path]):
    from simnet.model.memory import load_calibration, packaged_calibration

    if path is None:
        return packaged_calibration()
    try:
        text = path.read_text()
    except OSError as e:
        raise SimnetError(Problem(str(path), None, "--calibration", e.strerror or str(e))) from None
    return load_calibration(text, str(path))


def _installed_envoy() -> Optional[str]:
    try:
        from simnet.real.envoy import EnvoyError, envoy_version

        return envoy_version()
    except (EnvoyError, OSError):
        return None  # no Envoy here (pip install simnet without the real extra): nothing to match


@memory_app.command("estimate")
def memory_estimate(
    connections: Annotated[int, typer.Option(help="Peak concurrent connections to one sidecar (N).")],
    listener: Annotated[str, typer.Option(help="Listener kind: tcp, tls, mtls, http1 or http2.")] = "tls",
    mappings: Annotated[int, typer.Option(help="Port mappings (listeners and clusters) in the sidecar.")] = 1,
    margin: Annotated[float, typer.Option(help="Safety margin on the prediction for the recommendation.")] = 0.10,
    calibration: Annotated[Optional[Path], typer.Option(help=
        "A calibration file from `simnet memory calibrate` (default: the packaged one).")] = None,
    any_envoy: Annotated[bool, typer.Option("--any-envoy-version", help=
        "Use a calibration made for another Envoy version than the installed one.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Predicted Envoy memory at N connections and the additional_memory_allocation_mb to set,
    next to the seed's 10 + 0.03*N rule."""
    from simnet.model.envoy import LISTENER_KINDS
    from simnet.model.memory import SEED, recommended_allocation_mb, seed_rule_mb

    try:
        problems = []
        if not 0 <= connections <= MAX_CONNECTIONS:
            problems.append(Problem("<command line>", None, "--connections",
                                    f"{connections} is not a connection count 0-{MAX_CONNECTIONS:,}"))
        if listener not in LISTENER_KINDS:
            problems.append(Problem("<command line>", None, "--listener",
                                    f"{listener!r} is not one of {', '.join(LISTENER_KINDS)}"))
        if not 1 <= mappings <= 3000:
            problems.append(Problem("<command line>", None, "--mappings", "must be 1-3000"))
        if not 0 <= margin <= 10:
            problems.append(Problem("<command line>", None, "--margin", "must be 0-10 (a fraction)"))
        if problems:
            raise SimnetError(problems)
        cal = _calibration(calibration)
        if listener not in cal.kinds:
            raise SimnetError(Problem(str(calibration or "packaged calibration"), None, "kinds",
                                      f"has no {listener!r} listener kind"))
        installed = _installed_envoy()
        if installed and installed != cal.envoy_version and not any_envoy:
            raise SimnetError(Problem(str(calibration or "packaged calibration"), None, "envoy_version",
                                      f"calibrated for Envoy {cal.envoy_version}, but Envoy {installed} "
                                      "is installed: run `simnet memory calibrate` (or pass "
                                      "--any-envoy-version)"))
    except SimnetError as e:
        _fail(e)
    fp = cal.footprint(listener, mappings)
    measured = max(n for n, _ in cal.kinds[listener].points) if cal.kinds[listener].points else 0
    result = {
        "envoy_version": cal.envoy_version, "calibrated_on": cal.measured_on,
        "listener": listener, "connections": connections, "mappings": mappings,
        "predicted_envoy_mb": round(fp.memory_mb(connections), 3),
        "base_mb": round(fp.base_mb, 3), "per_connection_kb": fp.per_connection_kb,
        "measured_kept_after_close": {"fraction": cal.kinds[listener].retained_fraction,
                                      "after_connections": measured},
        "recommended_additional_memory_allocation_mb": recommended_allocation_mb(fp, connections, margin),
        "margin": margin,
        "seed_rule_mb": seed_rule_mb(connections),
        "seed_model_envoy_mb": round(SEED.memory_mb(connections), 3),
        "extrapolated": connections > measured,
    }
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    t = Table(title=f"Envoy {cal.envoy_version} sidecar, {listener} listener, {connections:,} connections")
    t.add_column("")
    t.add_column("MB", justify="right")
    t.add_row("predicted Envoy memory (private, high-water)", f"{result['predicted_envoy_mb']:.1f}")
    t.add_row(f"recommended additional_memory_allocation_mb (+{margin:.0%})",
              str(result["recommended_additional_memory_allocation_mb"]))
    t.add_row("seed rule 10 + 0.03*N", str(result["seed_rule_mb"]))
    console.print(t)
    console.print(f"measured: after {measured:,} connections closed, Envoy kept "
                  f"{cal.kinds[listener].retained_fraction:.0%} of what they took (the model keeps all)")
    if result["extrapolated"]:
        console.print(f"note: beyond the calibrated range (up to {measured:,} connections)")


@memory_app.command("calibrate")
def memory_calibrate(
    kinds: Annotated[str, typer.Option(help="Listener kinds to measure.")] = "tcp,tls,mtls,http1,http2",
    connections: Annotated[str, typer.Option(help="Connection counts to hold, increasing.")] =
        "0,250,500,1000,2000,4000,6000",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help=
        "Where to write the calibration (default: the packaged simnet/data/envoy_memory.json).")] = None,
) -> None:
    """Measure the installed Envoy's memory per listener kind and connection count, and write
    the fitted model (needs root: Envoy runs in a private network namespace)."""
    import os

    from simnet.model.envoy import LISTENER_KINDS

    try:
        chosen = _csv(kinds)
        problems = [Problem("<command line>", None, "--kinds", f"{k!r} is not one of "
                            f"{', '.join(LISTENER_KINDS)}") for k in chosen if k not in LISTENER_KINDS]
        counts = []
        for k, part in enumerate(_csv(connections)):
            if not part.isdigit() or int(part) > MAX_CONNECTIONS:
                problems.append(Problem("<command line>", None, f"--connections[{k}]",
                                        f"{part!r} is not a connection count"))
            else:
                counts.append(int(part))
        if counts != sorted(set(counts)) or len(counts) < 2:
            problems.append(Problem("<command line>", None, "--connections",
                                    "give at least two different counts, increasing"))
        if os.geteuid() != 0:
            problems.append(Problem("<command line>", None, "", "calibration needs root: Envoy "
                                    "and its load run in a private network namespace"))
        if problems:
            raise SimnetError(problems)
    except SimnetError as e:
        _fail(e)
    from simnet.real.memory import calibrate

    import simnet.data

    target = output or Path(simnet.data.__file__).with_name("envoy_memory.json")
    cal = calibrate(chosen, counts, progress=lambda line: console.print(line, markup=False))
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(cal.to_json(), indent=1) + "\n")
    tmp.replace(target)  # a failed calibration leaves the previous file intact
    t = Table(title=f"Envoy {cal.envoy_version} memory, calibrated {cal.measured_on}")
    for col in ("listener", "base MB", "KB per connection", "kept after closing all"):
        t.add_column(col, justify="right")
    for name, k in cal.kinds.items():
        t.add_row(name, f"{k.base_mb:.2f}", f"{k.per_connection_kb:.2f}", f"{k.retained_fraction:.0%}")
    console.print(t)
    console.print(f"each further port mapping: {cal.per_mapping_kb:.1f} KB; written to {target}")


iptables_app = typer.Typer(no_args_is_help=True,
                           help="Capture rules: generate them as the real tools do, trace connections through them.")
app.add_typer(iptables_app, name="iptables")
generate_app = typer.Typer(no_args_is_help=True, help="Generate a capture ruleset.")
iptables_app.add_typer(generate_app, name="generate")


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

    try:
        out = istio_capture(load_istio_config(config))
    except SimnetError as e:
        _fail(e)
    sys.stdout.write(out.golden() if dry_run else out.v4 + (out.v6 or ""))


def _address(value: str, option: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise SimnetError(Problem("<command line>", None, option, f"{value!r} is not an IP address")) from None


def _names(values: list[str]) -> dict[str, int]:
    out = {}
    for v in values:
        name, _, number = v.partition("=")
        if not name or not number.isdigit():
            raise SimnetError(Problem("<command line>", None, "--name", f"{v!r} is not NAME=ID"))
        out[name] = int(number)
    return out


@iptables_app.command("trace")
def iptables_trace(
    rules: Annotated[Path, typer.Argument(metavar="RULES", help=
        "Ruleset: iptables-save, iptables-restore or dry-run text.")],
    direction: Annotated[str, typer.Option(help="outbound (made by a local process) or inbound.")] = "outbound",
    proto: Annotated[str, typer.Option(help="tcp or udp.")] = "tcp",
    src: Annotated[str, typer.Option(help="Source address.")] = "",
    dst: Annotated[str, typer.Option(help="Destination address.")] = "",
    dport: Annotated[Optional[int], typer.Option(min=1, max=65535, help="Destination port.")] = None,
    sport: Annotated[int, typer.Option(min=1, max=65535, help="Source port.")] = 40000,
    uid: Annotated[Optional[int], typer.Option(min=0, help="Owner uid of the local socket (outbound).")] = None,
    gid: Annotated[Optional[int], typer.Option(min=0, help="Owner gid of the local socket (outbound).")] = None,
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
    ctstate: Annotated[str, typer.Option(help="Conntrack state of the packet.")] = "NEW",
    name: Annotated[list[str], typer.Option("--name", help=
        "NAME=ID for user/group names in owner matches (repeatable).")] = [],  # noqa: B006
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Where a connection's first packet goes under a ruleset, and the exact rules that fired."""
    from simnet.model.netfilter import CT_STATES, load_for_family
    from simnet.model.packet import Connection
    from simnet.model.packet_path import trace

    try:
        problems = []
        for opt, value in (("--dst", dst), ("--src", src), ("--dport", dport)):
            if not value:
                problems.append(Problem("<command line>", None, opt, "is required"))
        if direction not in ("outbound", "inbound"):
            problems.append(Problem("<command line>", None, "--direction", "must be outbound or inbound"))
        if proto not in ("tcp", "udp"):
            problems.append(Problem("<command line>", None, "--proto", "must be tcp or udp"))
        if ctstate not in CT_STATES:
            problems.append(Problem("<command line>", None, "--ctstate", f"must be one of {', '.join(CT_STATES)}"))
        if problems:
            raise SimnetError(problems)
        conn = Connection(direction, _address(dst, "--dst"), dport, _address(src, "--src"), sport, proto,
                          uid, gid, in_if=in_if, out_if=out_if,
                          in_addr=_address(in_addr, "--in-addr") if in_addr else "",
                          local_addrs=tuple(_address(a, "--local") for a in local)
                          # an inbound connection is addressed to this host (or --in-addr is its address)
                          + ((_address(in_addr or dst, "--dst"),) if direction == "inbound" else ()),
                          mark=mark, ctstate=ctstate, server_uid=server_uid, server_gid=server_gid)
        if len({conn.family, _family(src)} | ({_family(in_addr)} if in_addr else set())) != 1:
            raise SimnetError(Problem("<command line>", None, "--src", "--src and --dst are different IP versions"))
        try:
            text = rules.read_text()
        except OSError as e:
            raise SimnetError(Problem(str(rules), None, "", e.strerror or str(e))) from None
        outcome = trace(load_for_family(text, str(rules), conn.family), conn, _names(name))
    except SimnetError as e:
        _fail(e)
    if as_json:
        sys.stdout.write(json.dumps(outcome.to_json(), indent=2) + "\n")
        return
    j = outcome.to_json()
    console.print(f"[bold]{j['verdict']}[/bold]" + (f" -> {j['destination']}"
                  f" ({'this host' if j['local'] else 'elsewhere'})" if j["destination"] else ""))
    for step in j["path"]:
        console.print(f"  {step}", markup=False)


# --- simnet reach: who can open a connection to what (begin) --------------------------------


def _reach_to(value: str, deployment) -> tuple[str, int | None]:
    """``--to APP[/PORT]`` checked against the derived deployment: the app must exist and run,
    the port must be one of its sockets (app, sidecar, Envoy listener or admin port)."""
    from simnet.model.reachability import reachability, representatives

    def bad(message: str) -> SimnetError:
        return SimnetError(Problem("<command line>", None, "--to", message))

    name, slash, port_text = value.partition("/")
    apps = [a.name for a in deployment.scenario.apps]
    if name not in apps:
        raise bad(f"no app {name!r} in {deployment.scenario.name} (its apps: {', '.join(apps)})")
    if not slash:
        return name, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise bad(f"{port_text!r} is not a port number 1-65535 (write APP/PORT, e.g. {name}/8080)")
    guids = [g for g in representatives(deployment) if deployment.instance(g).app == name]
    if not guids:
        raise bad(f"app {name!r} has no running instance")
    known = reachability(deployment, app=name, guids=guids).ports
    if not any(p.target.port == int(port_text) for p in known):
        listing = ", ".join(f"{p.target.port} ({p.target.label})" for p in known)
        raise bad(f"app {name!r} has no port {port_text} (its ports: {listing})")
    return name, int(port_text)


def _reach_matrix_tables(matrix) -> list[Table]:
    """One table per app: its sockets down, the sources across, the easiest way in."""
    from simnet.model.reachability import SOURCES

    tables: dict[str, Table] = {}
    for r in matrix.rows:
        t = tables.get(r.app)
        if t is None:
            t = tables[r.app] = Table(title=f"{r.app} (instance 0): who can open a connection, "
                                            "with what")
            t.add_column("port", justify="right")
            t.add_column("socket", overflow="fold")
            for s in SOURCES:
                t.add_column(s, overflow="fold")
        socket = r.label[: -len(str(r.port))].strip() if r.label.endswith(str(r.port)) else r.label
        t.add_row(str(r.port), socket, *(c.text() for c in r.cells))
    return list(tables.values())


def _reach_detail(pr) -> None:
    """Every path into one socket: the source, the hops by name, what the connection needs."""
    t = pr.target
    console.print(f"[bold]{t.app}/{t.index} {t.label}[/bold] (listens on "
                  f"{t.address[0]}:{t.address[1]})")
    for a in sorted(pr.access, key=lambda a: bool(a.needs.grants)):
        console.print(f"  {a.source:<8} {a.name}", markup=False, soft_wrap=True)
        line = f"dial {a.address[0]}:{a.address[1]}; " if a.address else ""
        line += a.needs.text()
        if a.met_by_router is not None and a.needs.client_cert:
            line += f"; the router's certificate {'passes' if a.met_by_router else 'does not pass'}"
        console.print(f"           {line}", markup=False, soft_wrap=True)


@app.command()
def reach(
    scenario: Annotated[Path, typer.Argument(help="Scenario file, or the name of a bundled scenario.")],
    to: Annotated[Optional[str], typer.Option("--to", metavar="APP[/PORT]", help=
        "Only this app (every port of it), or one port: an app, sidecar, Envoy listener or "
        "admin port.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=
        "Machine-readable: every path of every running instance.")] = False,
) -> None:
    """Who can open a connection to an app's ports (external client, router, another
    container, the container itself), and what each connection needs (TLS, client cert, SAN)."""
    from simnet.model.reachability import reach_matrix, reachability, representatives
    from simnet.lenses import load_and_derive
    from simnet.scenario.load import scenario_path

    try:
        _, deployment = load_and_derive(scenario_path(scenario))
        name, port = _reach_to(to, deployment) if to is not None else (None, None)
    except SimnetError as e:
        _fail(e)
    if as_json:
        answer = reachability(deployment, app=name, port=port)
        sys.stdout.write(json.dumps(answer.to_json(), indent=2) + "\n")
        return
    if name is None:
        matrix = reach_matrix(deployment)
        for table in _reach_matrix_tables(matrix):
            console.print(table)
        limits = matrix.limits
    else:
        answer = reachability(deployment, app=name, port=port, guids=representatives(deployment))
        for pr in answer.ports:
            _reach_detail(pr)
        limits = answer.limits
        running = sum(1 for g in deployment.running if deployment.instance(g).app == name)
        if running > 1:
            console.print(f"{name}'s {running} instances are configured alike; instance 0 is "
                          "shown, --json lists every instance.", markup=False)
    for line in limits:
        console.print(f"note: {line}", markup=False)


# --- simnet reach (end) -----------------------------------------------------------------------


def _family(address: str) -> int:
    import ipaddress

    return ipaddress.ip_address(address).version


from simnet.routes_cli import routes_app  # noqa: E402  (sub-apps after the helpers they use)

from simnet.bosh_cli import bosh_app  # noqa: E402

from simnet.analyze_cli import analyze  # noqa: E402
from simnet.conform_cli import conform  # noqa: E402
from simnet.sweep_cli import sweep  # noqa: E402

app.command()(sweep)
app.command()(conform)
app.command()(analyze)
app.add_typer(routes_app, name="routes")
app.add_typer(bosh_app, name="bosh")


def main() -> None:
    app(prog_name="simnet")


if __name__ == "__main__":
    main()
