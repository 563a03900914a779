"""Load a scenario file: YAML with line numbers, schema validation, cross-references.

Every problem is collected in one pass and reported as ``FILE:LINE: field.path: message``.
ruamel.yaml's round-trip loader keeps the line of every key and list item, and refuses
duplicate keys; pydantic reports each schema violation with its location, which we map back
to the line it came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError

from simnet.errors import Problem, SimnetError
from simnet.scenario.schema import C2C_TLS_PORT, Scenario

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class SourceMap:
    """Where each part of a scenario came from, so later stages can name file and line."""

    file: str
    doc: Any

    def line(self, loc: Iterable[str | int]) -> int | None:
        """1-based line of the deepest node on ``loc`` present in the file."""
        node, line = self.doc, 1 if self.doc is not None else None
        for key in loc:
            if isinstance(node, CommentedMap) and key in node:
                line = node.lc.key(key)[0] + 1
                node = node[key]
            elif isinstance(node, CommentedSeq) and isinstance(key, int) and key < len(node):
                line = node.lc.item(key)[0] + 1
                node = node[key]
            # otherwise: a union tag or a missing key; stay at the parent's line
        return line

    def problem(self, loc: Loc, message: str) -> Problem:
        return Problem(self.file, self.line(loc), ".".join(str(k) for k in loc), message)


def _plain(node: Any) -> Any:
    """ruamel's round-trip containers and scalars as plain Python values."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    for t in (int, float, str):
        if isinstance(node, t):
            return t(node)
    return node


def _yaml_document(text: str, file: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        return yaml.load(text)
    except DuplicateKeyError as e:
        mark = e.problem_mark
        key = str(e.problem).split('"')[1] if '"' in str(e.problem) else ""
        raise SimnetError(
            Problem(file, mark.line + 1 if mark else None, key, "duplicate key")
        ) from None
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise SimnetError(
            Problem(file, mark.line + 1 if mark else None, "", f"invalid YAML: {e.problem}")
        ) from None


def _schema_problems(err: ValidationError, source: SourceMap) -> Iterator[Problem]:
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        # Drop discriminated-union tags (e.g. 'lognormal') from the path the user sees.
        shown = tuple(
            k for i, k in enumerate(loc)
            if not (isinstance(k, str) and i and _is_union_tag(source.doc, loc[:i], k))
        )
        message = e["msg"]
        if e["type"] == "extra_forbidden":
            message = "unknown key"
        elif e["type"] == "missing":
            message = "required field is missing"
        message = message.removeprefix("Value error, ")
        yield Problem(source.file, source.line(loc), ".".join(map(str, shown)), message)


def _is_union_tag(doc: Any, parent: Loc, key: str) -> bool:
    node = doc
    for k in parent:
        try:
            node = node[k]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(node, dict) and key not in node and node.get("dist", node.get("kind")) == key


def reference_problems(s: Scenario) -> Iterator[tuple[Loc, str]]:
    """Cross-references the schema cannot see: unknown apps, ports no app listens on, clashes."""
    names = [a.name for a in s.apps]
    for i, name in enumerate(names):
        if name in names[:i]:
            yield ("apps", i, "name"), f"duplicate app name {name!r}"
    apps = {a.name: a for a in s.apps}
    for i, app in enumerate(s.apps):
        for j, sc in enumerate(app.sidecars):
            for k, port in enumerate(sc.ports):
                if port in app.ports:
                    yield ("apps", i, "sidecars", j, "ports", k), (
                        f"port {port} is already the app's port: sidecars share the network "
                        "namespace, so two processes cannot listen on it"
                    )
                if port == C2C_TLS_PORT:
                    yield ("apps", i, "sidecars", j, "ports", k), (
                        f"port {port} is reserved for container-to-container TLS"
                    )
    hosts = set()
    for i, r in enumerate(s.routes):
        hosts.add(r.host)
        if r.app not in apps:
            yield ("routes", i, "app"), f"no app named {r.app!r}"
        elif r.port not in apps[r.app].ports:
            yield ("routes", i, "port"), (
                f"app {r.app!r} does not listen on {r.port} (its ports: {apps[r.app].ports})"
            )
    for i, c in enumerate(s.clients):
        if c.host not in hosts:
            yield ("clients", i, "host"), f"no route for host {c.host!r}"
    for i, f in enumerate(s.faults):
        if f.app not in apps:
            yield ("faults", i, "app"), f"no app named {f.app!r}"
        elif f.instance >= apps[f.app].instances:
            yield ("faults", i, "instance"), (
                f"app {f.app!r} has {apps[f.app].instances} instance(s); index {f.instance} "
                "does not exist"
            )
        if f.at_s > s.duration_s:
            yield ("faults", i, "at_s"), f"after the end of the run ({s.duration_s} s)"
        if f.kind == "move" and f.reused_by not in apps:
            yield ("faults", i, "reused_by"), f"no app named {f.reused_by!r}"


def load_text(text: str, file: str = "<string>") -> tuple[Scenario, SourceMap]:
    """Parse and validate scenario text; raise SimnetError listing every problem."""
    doc = _yaml_document(text, file)
    source = SourceMap(file, doc)
    if not isinstance(doc, CommentedMap):
        raise SimnetError(Problem(file, 1, "", "a scenario must be a YAML mapping"))
    try:
        scenario = Scenario.model_validate(_plain(doc), strict=True)
    except ValidationError as err:
        raise SimnetError(list(_schema_problems(err, source))) from None
    problems = [source.problem(loc, msg) for loc, msg in reference_problems(scenario)]
    if problems:
        raise SimnetError(problems)
    return scenario, source


def load_scenario(path: str | Path) -> tuple[Scenario, SourceMap]:
    """Load a scenario file; the file name in errors is the path as given."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SimnetError(Problem(str(path), None, "", f"cannot read: {e.strerror}")) from None
    except UnicodeDecodeError:
        raise SimnetError(Problem(str(path), None, "", "not UTF-8 text")) from None
    return load_text(text, str(path))


BUNDLED = Path(__file__).resolve().parent.parent / "scenarios"
DEFAULT_SCENARIO = "diego-route-integrity"


def bundled(name: str = DEFAULT_SCENARIO) -> Path:
    """Path of a scenario shipped with simnet."""
    return BUNDLED / f"{name}.yaml"
