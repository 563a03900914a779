"""Coverage-guided fuzzing of simnet's parsers with atheris (libFuzzer for Python).

Each target feeds bytes to one input path; anything but a result or simnet's own SimnetError
(exit code 2 at the CLI) is a crash, which libFuzzer reports with the input that caused it.

    python fuzz/atheris_parsers.py TARGET -runs=20000   # in a scratch folder: it writes there
    # TARGET: iptables, scenario, routes, manifest, pem, sweep
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["simnet"]):  # our code only: the rest is slow to instrument
    from simnet import credentials
    from simnet.errors import SimnetError
    from simnet.model import netfilter as nf
    from simnet.scenario.bosh_manifest import load_manifest_text
    from simnet.scenario.load import load_text
    from simnet.scenario.routes import load_routes_text
    from simnet.sweep.source import checked_points, sweep_source

WORK = Path.cwd()  # libFuzzer exits without Python's clean-up: files go where it runs
BASE = ("name: fz\nduration_s: 1\ncells: {count: 2, memory_mb: 4096}\n"
        "apps: [{name: a, instances: 2}]\nroutes: [{host: a.example.com, app: a}]\n")
(WORK / "simnet-fuzz-base.yaml").write_text(BASE)


def _text(data: bytes) -> str:
    return atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))


def _pem(data: bytes) -> None:
    f = WORK / "simnet-fuzz.pem"
    f.write_bytes(data)
    for read in (lambda: credentials.certificates(f, "--ca"),
                 lambda: credentials.private_key(f, "--key")):
        try:
            read()
        except SimnetError as e:  # both readers run: one's error must not hide the other's crash
            assert e.problems, "a SimnetError must say what is wrong"


def _sweep(data: bytes) -> None:
    f = WORK / "simnet-fuzz-sweep.yaml"
    f.write_text("scenario: simnet-fuzz-base.yaml\n" + _text(data))
    s, d, source = sweep_source(f)
    checked_points(s, d, source)


TARGETS = {
    "iptables": lambda data: nf.load(_text(data), "r.rules"),
    "scenario": lambda data: load_text(_text(data), "s.yaml"),
    "routes": lambda data: load_routes_text(_text(data), "r.yaml"),
    "manifest": lambda data: load_manifest_text(_text(data), "m.yml"),
    "pem": _pem,
    "sweep": _sweep,
}


def main() -> None:
    target = TARGETS[sys.argv.pop(1)]

    def one_input(data: bytes) -> None:
        try:
            target(data)
        except SimnetError as e:
            assert e.problems, "a SimnetError must say what is wrong"

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
