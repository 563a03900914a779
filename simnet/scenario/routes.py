"""Load Route custom resources (``simnet.scenario.route_schema``) from YAML files that may hold
several documents, every problem located by file, line and field (``spec.destinations.1.weight``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from simnet.errors import Problem, SimnetError
from simnet.scenario.messages import message
from simnet.scenario.route_schema import RouteResource
from simnet.scenario.source import Loc, SourceMap, plain, yaml_documents

__all__ = ["Located", "load_routes", "load_routes_text"]


class Located(BaseModel):
    """A Route and where it came from, so the translation's errors can name file and line."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    route: RouteResource
    source: SourceMap

    def problem(self, loc: Loc, message: str) -> Problem:
        return self.source.problem(loc, message)


def load_routes_text(text: str, file: str = "<string>") -> list[Located]:
    """Every Route in a (multi-document) YAML text -- none for an empty one, the state before
    any route exists; raise SimnetError listing every problem."""
    docs = yaml_documents(text, file)
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
            routes.append(Located(route=RouteResource.model_validate(plain(doc)), source=source))
        except ValidationError as err:
            for e in err.errors(include_url=False):
                loc = tuple(e["loc"])
                problems.append(source.problem(loc, message(e, loc, RouteResource)))
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
