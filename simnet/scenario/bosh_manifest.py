"""Load BOSH deployment manifests (``simnet.scenario.bosh_schema``) with every problem located
(``instance_groups.1.jobs.0.expose_ports.0.number``), and fill a scenario's apps and routes from
its manifest: the checks BOSH and the Pilot adapter would make, before the model builds on it.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import ValidationError

from simnet.errors import Problem, SimnetError
from simnet.scenario.bosh_schema import Manifest, exposed_services
from simnet.scenario.bundled import BUNDLED
from simnet.scenario.messages import message
from simnet.scenario.source import (
    AliasCycle,
    Loc,
    SourceMap,
    plain,
    relative_to,
    yaml_document,
)

__all__ = ["load_manifest", "load_manifest_text", "merge_manifest", "sample_manifest_path",
           "scenario_parts"]

# A .boshy name is <job>.<instance group>.<deployment>.boshy: each part must be a DNS label.
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def sample_manifest_path() -> Path:
    """The sample manifest bundled beside the scenarios (``bosh-istio`` is built from it)."""
    return BUNDLED / "sample-bosh-manifest.yml"


def _label_problem(source: SourceMap, loc: Loc, value: str, what: str) -> Problem | None:
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
        doc, problems = yaml_document(text, file)
    except RecursionError:
        raise SimnetError(Problem(file, 1, "", "the document is nested too deeply")) from None
    source = SourceMap(file, doc)
    if not isinstance(doc, dict):
        raise SimnetError(problems + [Problem(file, source.line(()) or 1, "",
                                              "a BOSH manifest is a YAML mapping")])
    try:
        raw = plain(doc)
    except AliasCycle as c:
        raise SimnetError(problems + [source.problem(c.loc, "an alias refers to a mapping or "
                                                     "list that contains it")]) from None
    except RecursionError:
        raise SimnetError(Problem(file, 1, "", "the document is nested too deeply")) from None
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as err:
        problems += [source.problem(tuple(e["loc"]), message(e, tuple(e["loc"]), Manifest))
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


def scenario_parts(m: Manifest) -> dict[str, list[dict]]:
    """The manifest as scenario ``apps`` (one per instance group and job with exposed ports,
    named ``<job>-<group>``, with the group's instances and the ports) and ``routes`` (one per
    exposed port, host = its .boshy name), as plain scenario-schema dicts."""
    apps: dict[str, dict] = {}
    routes = []
    for s in exposed_services(m):
        name = f"{s.job}-{s.group}"
        app = apps.setdefault(name, {"name": name, "instances": s.instances, "ports": []})
        app["ports"].append(s.port)  # the loader rejects a number exposed twice in a job
        routes.append({"host": s.name, "app": name, "port": s.port})
    return {"apps": list(apps.values()), "routes": routes}


def merge_manifest(data: dict, file: str, source: SourceMap) -> list[Problem]:
    """Fill the plain scenario ``data``'s ``apps`` and ``routes`` from its BOSH manifest (seed
    003; ``file`` is the scenario's): every job's exposed ports, merged with the scenario's own
    entries of the same name or host. The problems are where the scenario contradicts it."""
    if data.get("platform") != "bosh":
        return [source.problem(("bosh_manifest",), "a BOSH manifest needs platform: bosh")]
    path = relative_to(file, data["bosh_manifest"])
    parts = scenario_parts(load_manifest(path))
    problems = []
    apps = data.setdefault("apps", [])
    if not isinstance(apps, list):
        return problems
    by_name = {a.get("name"): (i, a) for i, a in enumerate(apps) if isinstance(a, dict)}
    for app in parts["apps"]:
        if app["name"] not in by_name:
            apps.append(app)
            continue
        i, mine = by_name[app["name"]]
        for key in ("instances", "ports"):
            if key in mine and mine[key] != app[key]:
                problems.append(source.problem(("apps", i, key), (
                    f"{mine[key]} here, but {app[key]} in the manifest {path}: the manifest "
                    "decides")))
            mine[key] = app[key]
    routes = data.setdefault("routes", [])
    if isinstance(routes, list):
        hosts = {r.get("host") for r in routes if isinstance(r, dict)}
        routes += [r for r in parts["routes"] if r["host"] not in hosts]
    return problems
