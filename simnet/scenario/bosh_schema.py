"""BOSH deployment manifests as pydantic types, the parts the BOSH + Istio prototype's Pilot
adapter reads (seed 003), and the services a manifest exposes: what the model's control plane
(``simnet.model.bosh``) and the scenario loader (apps and routes from a manifest) both build on.

Each job's ``expose_ports`` has ``name`` and ``number``, as rosenhouse/istio's
``pilot/pkg/serviceregistry/bosh`` ``ManifestWithExposedPorts`` declares them; every other BOSH
key is accepted and ignored, as BOSH ignores ``expose_ports``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ExposedPort", "ExposedService", "InstanceGroup", "Job", "Manifest", "exposed_services"]


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


@dataclass(frozen=True)
class ExposedService:
    """One exposed port of a job: its .boshy name, port number and name, and where it runs."""

    name: str  # <job>.<instance group>.<deployment>.boshy
    port: int
    port_name: str
    group: str
    job: str
    instances: int


def exposed_services(m: Manifest) -> list[ExposedService]:
    """Every exposed port of every job, in manifest order. A group with no instances has no
    VMs, and the adapter builds services from the director's VM list, so it exposes nothing."""
    return [ExposedService(f"{job.name}.{g.name}.{m.name}.boshy", p.number, p.name, g.name,
                           job.name, g.instances)
            for g in m.instance_groups if g.instances for job in g.jobs for p in job.expose_ports]
