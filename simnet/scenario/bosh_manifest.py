"""BOSH deployment manifests, the parts the BOSH + Istio prototype's Pilot adapter reads
(seed 003): the deployment name, each instance group's instance count and jobs, and each
job's ``expose_ports`` (``name`` and ``port``). Every other BOSH key is accepted and ignored;
problems name file, line and field (``instance_groups.1.jobs.0.expose_ports.0.port``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simnet.errors import Problem, SimnetError
from simnet.scenario.load import SourceMap, _message, _plain, _yaml_document


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ExposedPort(_Lenient):
    name: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class Job(_Lenient):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    expose_ports: list[ExposedPort] = Field(default_factory=list)


class InstanceGroup(_Lenient):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    instances: int = Field(ge=0, le=10_000)
    jobs: list[Job] = Field(default_factory=list)


class Manifest(_Lenient):
    """A BOSH deployment manifest as the prototype's Pilot adapter sees it."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    instance_groups: list[InstanceGroup] = Field(default_factory=list)


def load_manifest_text(text: str, file: str = "<manifest>") -> Manifest:
    doc, problems = _yaml_document(text, file)
    source = SourceMap(file, doc)
    if not isinstance(doc, dict):
        raise SimnetError(problems + [Problem(file, 1, "", "a BOSH manifest is a YAML mapping")])
    try:
        manifest = Manifest.model_validate(_plain(doc))
    except ValidationError as err:
        problems += [source.problem(tuple(e["loc"]), _message(e, tuple(e["loc"])))
                     for e in err.errors(include_url=False)]
        raise SimnetError(problems) from None
    seen: dict[tuple[str, str, int], str] = {}
    for i, g in enumerate(manifest.instance_groups):
        for j, job in enumerate(g.jobs):
            for k, p in enumerate(job.expose_ports):
                key = (g.name, job.name, p.port)
                if key in seen:
                    problems.append(source.problem(
                        ("instance_groups", i, "jobs", j, "expose_ports", k, "port"),
                        f"port {p.port} is already exposed as {seen[key]!r}"))
                seen.setdefault(key, p.name)
    if problems:
        raise SimnetError(problems)
    return manifest


def load_manifest(path: str | Path) -> Manifest:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SimnetError(Problem(str(path), None, "", f"cannot read: {e}")) from None
    return load_manifest_text(text, str(path))
