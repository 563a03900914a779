"""pytest plugin for the conformance suite: Hypothesis profiles, the namespace guard, the
counts of cases compared, and (with ``--simnet-results FILE``) each test's outcome as JSON for
``simnet conform``'s feature table.

Loaded by ``simnet conform`` (``-p simnet.conformance.plugin``) and by simnet's own tests.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=200, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=25, deadline=None)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("simnet-conformance", "simnet conformance suite")
    group.addoption("--simnet-examples", type=int, default=None, metavar="N",
                    help="Hypothesis examples per property (default: the profile's).")
    group.addoption("--simnet-scenario", default=None, metavar="S",
                    help="twin suite: the scenario to validate (default: the bundled default).")
    group.addoption("--simnet-twin-duration", type=float, default=None, metavar="SECONDS",
                    help="twin suite: emulate at most this long (default: the scenario's).")
    group.addoption("--simnet-results", default=None, metavar="FILE",
                    help="Write each conformance test's outcome to FILE (JSON lines).")


def pytest_configure(config: pytest.Config) -> None:
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
    n = config.getoption("simnet_examples")
    if n:
        settings.register_profile("simnet-conform", settings(settings(), max_examples=n))
        settings.load_profile("simnet-conform")
    path = config.getoption("simnet_results")
    if path:
        config.pluginmanager.register(_Results(path), "simnet-results")


@pytest.fixture(scope="session")
def kernel_netns():
    """Real-netfilter checks need root and ``ip netns``. Without them they skip, saying why,
    except where ``SIMNET_REAL_REQUIRED=1`` (simnet's own CI): there they fail. Namespaces of
    dead earlier sessions are swept first; none of ours may be left at the end."""
    from simnet.real.netns import Namespace, NetnsError, list_namespaces, sweep_leftovers

    give_up = pytest.fail if os.environ.get("SIMNET_REAL_REQUIRED") == "1" else pytest.skip
    if os.geteuid() != 0:
        give_up("needs root (network namespaces, iptables-restore)")
    sweep_leftovers()
    try:
        with Namespace("check"):
            pass
    except (NetnsError, OSError) as e:
        give_up(f"cannot create a network namespace with `ip netns add`: {e}")
    yield
    sweep_leftovers()
    ours = [n for n in list_namespaces() if n.startswith(f"simnet-{os.getpid()}-")]
    assert ours == [], f"namespaces left behind: {ours}"


def cases_compared() -> dict[str, int]:
    """How many cases the differential tests compared with real components in this process."""
    out = {}
    kernel = sys.modules.get("simnet.conformance.test_kernel_differential")
    if kernel is not None and kernel.KERNEL_CASES["rulesets"]:
        out["kernel rulesets"] = kernel.KERNEL_CASES["rulesets"]
        out["kernel connections"] = kernel.KERNEL_CASES["connections"]
    tls = sys.modules.get("simnet.strategies.tls")
    if tls is not None:
        out.update({f"handshakes {pair}": n for pair, n in sorted(tls.HANDSHAKES.items())})
    return out


def pytest_terminal_summary(terminalreporter) -> None:
    n = cases_compared()
    if "kernel rulesets" in n:
        terminalreporter.write_line(
            f"kernel differential: {n['kernel connections']} connections through "
            f"{n['kernel rulesets']} rulesets compared with the real kernel")
    pairs = [(k.removeprefix("handshakes "), v) for k, v in n.items() if k.startswith("handshakes")]
    if pairs:
        terminalreporter.write_line("TLS differential: handshakes compared with real components: "
                                    + ", ".join(f"{v} {pair}" for pair, v in pairs))


class _Results:
    """Appends one JSON line per conformance test: module, function, outcome, why."""

    def __init__(self, path: str):
        self.path = path
        open(path, "w").close()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":  # a setup skip or failure too
            module = report.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
            function = report.nodeid.split("::")[-1].split("[")[0]
            why = ""
            if report.skipped and isinstance(report.longrepr, tuple):
                why = report.longrepr[2].removeprefix("Skipped: ")
            elif report.failed:
                why = (report.longreprtext.strip().splitlines() or [""])[-1][:300]
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"nodeid": report.nodeid, "module": module,
                                    "function": function, "when": report.when,
                                    "outcome": report.outcome, "why": why}) + "\n")

    def pytest_sessionfinish(self, session) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"cases": cases_compared()}) + "\n")
