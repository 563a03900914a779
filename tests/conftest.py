"""Test configuration: the conformance plugin (Hypothesis profiles ``ci`` and ``dev``, the
namespace guard, the counts of cases compared), with real components required: a check that
cannot run here fails, it does not skip."""

import os

os.environ.setdefault("SIMNET_REAL_REQUIRED", "1")

pytest_plugins = ["simnet.conformance.plugin"]


def _loaded(name: str, attribute: str):
    """A test module of this run by its last name, if it was imported."""
    import sys

    return next((m for k, m in list(sys.modules.items())
                 if k.rpartition(".")[2] == name and hasattr(m, attribute)), None)


def pytest_terminal_summary(terminalreporter):
    """How many cases `simnet conform` compared with real components, and how many inputs the
    fuzz tests tried, per input path."""
    conform = _loaded("test_conform", "CASES")
    if conform is not None and conform.CASES:
        terminalreporter.write_line("simnet conform compared with real components: " + ", ".join(
            f"{n:,} {what}" for what, n in conform.CASES.items()))
    fuzzing = _loaded("fuzzing", "FUZZED")
    if fuzzing is not None and fuzzing.FUZZED:
        counts = ", ".join(f"{n:,} {what}" for what, n in sorted(fuzzing.FUZZED.items()))
        terminalreporter.write_line(f"fuzzing: {sum(fuzzing.FUZZED.values()):,} inputs "
                                    f"({counts}); each gave a result or a located error")
