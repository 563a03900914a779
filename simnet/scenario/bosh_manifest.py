"""BOSH deployment manifests, the parts the BOSH + Istio prototype's Pilot adapter reads
(seed 003): the deployment name, each instance group's instance count and jobs, and each
job's ``expose_ports`` (``name`` and ``number``, as rosenhouse/istio's
``pilot/pkg/serviceregistry/bosh`` ``ManifestWithExposedPorts`` declares them). Every other
BOSH key is accepted and ignored, as BOSH ignores ``expose_ports``; problems name file, line
and field (``instance_groups.1.jobs.0.expose_ports.0.number``).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simnet.errors import Problem, SimnetError
from simnet.scenario.load import SourceMap, _Cycle, _message, _plain, _yaml_document

# A .boshy name is <job>.<instance group>.<deployment>.boshy: each part must be a DNS label.
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ExposedPort(_Lenient):
    """One ``expose_ports`` entry. The prototype's key is ``number``; ``port`` (simnet's earlier
    spelling) is accepted too."""

    name: str = Field(min_length=1, pattern=r"^[^|\s]+$")  # Istio's cluster key is host|name
    number: int = Field(ge=1, le=65535)


class Job(_Lenient):
    name: str = Field(min_length=1)
    expose_ports: list[ExposedPort] = Field(default_factory=list)


class InstanceGroup(_Lenient):
    name: str = Field(min_length=1)
    instances: int = Field(ge=0, le=10_000)
    jobs: list[Job] = Field(default_factory=list)


class Manifest(_Lenient):
    """A BOSH deployment manifest as the prototype's Pilot adapter sees it."""

    name: str = Field(min_length=1)
    instance_groups: list[InstanceGroup] = Field(default_factory=list)


def sample_manifest_path() -> Path:
    """The sample manifest bundled beside the scenarios (``bosh-istio`` is built from it)."""
    from simnet.scenario.load import BUNDLED

    return BUNDLED / "sample-bosh-manifest.yml"


def _label_problem(source: SourceMap, loc: tuple, value: str, what: str) -> Problem | None:
    if _DNS_LABEL.fullmatch(value):
        return None
    return source.problem(loc, (
        f"{value!r} is not a lowercase DNS label (a-z, 0-9, '-', at most 63): the {what} is part "
        "of the exposed .boshy name <job>.<instance group>.<deployment>.boshy"))


def _checks(m: Manifest, raw: dict, source: SourceMap) -> list[Problem]:
    """What BOSH or the Pilot adapter would trip over: duplicate groups or jobs (BOSH rejects
    them), duplicate port names or numbers in a job (one cluster ``out.<name>|<port name>``,
    one listener per VIP:port), and names that cannot form a .boshy name. Jobs that expose
    nothing may use any name BOSH allows (underscores and all)."""
    problems: list[Problem] = []
    groups_seen: set[str] = set()
    exposing = any(job.expose_ports for g in m.instance_groups for job in g.jobs)
    if exposing and (p := _label_problem(source, ("name",), m.name, "deployment name")):
        problems.append(p)
    for i, g in enumerate(m.instance_groups):
        if g.name in groups_seen:
            problems.append(source.problem(("instance_groups", i, "name"),
                                           f"instance group {g.name!r} is declared twice"))
        groups_seen.add(g.name)
        jobs_seen: set[str] = set()
        for j, job in enumerate(g.jobs):
            loc = ("instance_groups", i, "jobs", j)
            if job.name in jobs_seen:
                problems.append(source.problem(loc + ("name",), (
                    f"job {job.name!r} is already in instance group {g.name!r}")))
            jobs_seen.add(job.name)
            if not job.expose_ports:
                continue
            for where, value, what in (
                    (("instance_groups", i, "name"), g.name, "instance group name"),
                    (loc + ("name",), job.name, "job name")):
                if (p := _label_problem(source, where, value, what)):
                    problems.append(p)
            names: dict[str, int] = {}
            numbers: dict[int, str] = {}
            for k, port in enumerate(job.expose_ports):
                ploc = loc + ("expose_ports", k)
                if port.name in names:
                    problems.append(source.problem(ploc + ("name",), (
                        f"port name {port.name!r} is already exposed (as "
                        f"{names[port.name]}): Pilot names one cluster per port name")))
                if port.number in numbers:
                    problems.append(source.problem(ploc + ("number",), (
                        f"port {port.number} is already exposed as {numbers[port.number]!r}")))
                names.setdefault(port.name, port.number)
                numbers.setdefault(port.number, port.name)
    return problems


def load_manifest_text(text: str, file: str = "<manifest>") -> Manifest:
    """Parse a BOSH manifest; raise SimnetError with every problem as ``FILE:LINE: field: ...``."""
    try:
        doc, problems = _yaml_document(text, file)
    except RecursionError:
        raise SimnetError(Problem(file, 1, "", "the document is nested too deeply")) from None
    source = SourceMap(file, doc)
    if not isinstance(doc, dict):
        raise SimnetError(problems + [Problem(file, source.line(()) or 1, "",
                                              "a BOSH manifest is a YAML mapping")])
    try:
        raw = _plain(doc)
    except _Cycle as c:
        raise SimnetError(problems + [source.problem(c.loc, "an alias refers to a mapping or "
                                                     "list that contains it")]) from None
    except RecursionError:
        raise SimnetError(Problem(file, 1, "", "the document is nested too deeply")) from None
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as err:
        problems += [source.problem(tuple(e["loc"]), _message(e, tuple(e["loc"])))
                     for e in err.errors(include_url=False)]
        raise SimnetError(problems) from None
    problems += _checks(manifest, raw, source)
    if problems:
        raise SimnetError(problems)
    return manifest


def load_manifest(path: str | Path) -> Manifest:
    """Read and parse a BOSH manifest file (see ``load_manifest_text``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SimnetError(Problem(str(path), None, "", f"cannot read: {e}")) from None
    return load_manifest_text(text, str(path))
