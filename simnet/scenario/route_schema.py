"""Route custom resources (``networking.cloudfoundry.org/v1alpha1``, kind ``Route``), the objects
Cloud Controller writes on cf-for-k8s, as pydantic types: what the RouteController translates
(``simnet.model.routecontroller``) and what ``simnet.scenario.routes`` loads.

The schema follows cf-k8s-networking's ``routecontroller/apis/networking/v1alpha1``
(``RouteSpec``, ``RouteDestination``); like the Kubernetes API server, keys the type does not
declare are ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_NAMESPACE", "Destination", "DestinationApp", "Domain", "Metadata", "Process",
    "RouteResource", "RouteSpec", "Selector",
]

DEFAULT_NAMESPACE = "cf-workloads"  # where cf-for-k8s puts app Routes, Services and pods


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Metadata(_Lenient):
    name: str = Field(min_length=1)
    namespace: str | None = None
    uid: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class Domain(_Lenient):
    name: str = Field(min_length=1)
    internal: bool = False


class Process(_Lenient):
    type: str


class DestinationApp(_Lenient):
    guid: str
    process: Process


class Selector(_Lenient):
    matchLabels: dict[str, str] = Field(default_factory=dict)


class Destination(_Lenient):
    guid: str = Field(min_length=1)
    weight: int | None = None
    port: int = Field(ge=1, le=65535)
    app: DestinationApp
    selector: Selector = Field(default_factory=Selector)


class RouteSpec(_Lenient):
    host: str = ""
    path: str = ""
    url: str
    domain: Domain
    destinations: list[Destination] = Field(default_factory=list)


class RouteResource(_Lenient):
    """One Route custom resource."""

    apiVersion: Literal["networking.cloudfoundry.org/v1alpha1"]
    kind: Literal["Route"]
    metadata: Metadata
    spec: RouteSpec

    @property
    def fqdn(self) -> str:
        """``Route.FQDN()``: host.domain, or the domain alone for an empty host."""
        return f"{self.spec.host}.{self.spec.domain.name}" if self.spec.host else self.spec.domain.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or DEFAULT_NAMESPACE
