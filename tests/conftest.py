"""Test configuration: hypothesis profiles (``ci``: more examples, derandomized, no deadline)."""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, derandomize=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def _loaded(name: str):
    """A test module by its last name, if this run imported it."""
    import sys

    return next((m for key, m in list(sys.modules.items()) if key.rpartition(".")[2] == name), None)


def pytest_terminal_summary(terminalreporter):
    """How many cases the differential tests compared with real components, when they ran."""
    kernel = _loaded("test_kernel_differential")
    if kernel is not None and kernel.KERNEL_CASES["rulesets"]:
        n = kernel.KERNEL_CASES
        terminalreporter.write_line(
            f"kernel differential: {n['connections']} connections through {n['rulesets']} rulesets "
            "compared with the real kernel")
    tls = _loaded("tls_strategies")
    if tls is not None and tls.HANDSHAKES:
        pairs = ", ".join(f"{n} {pair}" for pair, n in sorted(tls.HANDSHAKES.items()))
        terminalreporter.write_line(f"TLS differential: handshakes compared with real components: {pairs}")


@pytest.fixture(scope="session")
def kernel_netns():
    """Real-netfilter tests need root and ``ip netns``: without them they FAIL (never skip).
    Namespaces of dead earlier sessions are swept first; none of ours may be left at the end."""
    from simnet.real.netns import Namespace, NetnsError, list_namespaces, sweep_leftovers

    if os.geteuid() != 0:
        pytest.fail("the real-netfilter tests need root (network namespaces, iptables-restore); "
                    "they are part of the suite and do not skip", pytrace=False)
    sweep_leftovers()
    try:
        with Namespace("check"):
            pass
    except (NetnsError, OSError) as e:
        pytest.fail(f"cannot create a network namespace with `ip netns add`: {e}", pytrace=False)
    yield
    sweep_leftovers()
    ours = [n for n in list_namespaces() if n.startswith(f"simnet-{os.getpid()}-")]
    assert ours == [], f"namespaces left behind: {ours}"
