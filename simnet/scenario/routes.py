"""Route custom resources (``networking.cloudfoundry.org/v1alpha1``, kind ``Route``): the
objects Cloud Controller writes on cf-for-k8s and the RouteController translates.

The schema follows cf-k8s-networking's ``routecontroller/apis/networking/v1alpha1``
(``RouteSpec``, ``RouteDestination``); like the Kubernetes API server, keys the type does not
declare are ignored. Files may hold several YAML documents; every problem names its file,
line and field (``spec.destinations.1.weight``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from simnet.errors import Problem, SimnetError
from simnet.scenario.load import SourceMap, _message, _plain, _yaml_error

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


class Located(BaseModel):
    """A Route and where it came from, so the translation's errors can name file and line."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    route: RouteResource
    source: SourceMap

    def problem(self, loc: tuple[str | int, ...], message: str) -> Problem:
        return self.source.problem(loc, message)


def load_routes_text(text: str, file: str = "<string>") -> list[Located]:
    """Every Route in a (multi-document) YAML text -- none for an empty one, the state before
    any route exists; raise SimnetError listing every problem."""
    try:
        docs = list(YAML(typ="rt").load_all(text))
    except YAMLError as e:
        raise _yaml_error(e, text, file) from None
    routes: list[Located] = []
    problems: list[Problem] = []
    for doc in docs:
        if doc is None:
            continue
        source = SourceMap(file, doc)
        if not isinstance(doc, dict):
            problems.append(source.problem((), "a Route document must be a mapping"))
            continue
        try:
            routes.append(Located(route=RouteResource.model_validate(_plain(doc)), source=source))
        except ValidationError as err:
            for e in err.errors(include_url=False):
                loc = tuple(e["loc"])
                problems.append(source.problem(loc, _message(e, loc)))
    if problems:
        raise SimnetError(problems)
    return routes


def load_routes(*paths: str | Path) -> list[Located]:
    """The Routes of every file, in order; all files are read before any problem is raised."""
    routes: list[Located] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            problems.append(Problem(str(path), None, "", f"cannot read: {e}"))
            continue
        try:
            routes += load_routes_text(text, str(path))
        except SimnetError as e:
            problems += e.problems
    if problems:
        raise SimnetError(problems)
    return routes
