"""Load a scenario file: YAML with line numbers, schema validation, cross-references.

Every problem is collected in one pass and reported as ``FILE:LINE: field.path: message``:
duplicate keys, schema violations (pydantic, each mapped back to the line it came from) and
cross-references between sections (routes to unknown apps, faults on instances that do not
exist, ...). Cross-references are checked even when other parts of the file are invalid, on
the parts that are valid, so one run of the loader shows everything there is to fix.

ruamel.yaml's round-trip loader keeps the line of every key and list item; the composed node
graph gives the line of every duplicate key.
"""

from __future__ import annotations

import difflib
import math
import re
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarbool import ScalarBoolean

from simnet.errors import Problem, SimnetError
from simnet.model.ports import C2C_TLS_PORT
from simnet.scenario.schema import App, Client, Fault, Route, Routers, Scenario

Loc = tuple[str | int, ...]

MERGE_TAG = "tag:yaml.org,2002:merge"


# --- where things are in the file ---------------------------------------------------------


def _key_text(key: Any) -> str:
    """A mapping key as the user wrote it (``true`` rather than Python's ``True``)."""
    if isinstance(key, (bool, ScalarBoolean)):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)


_MISSING = object()


def _child_key(node: CommentedMap, key: str | int) -> Any:
    """The key of ``node`` whose text is ``key``, or ``_MISSING`` when there is none."""
    if isinstance(key, str) and key in node:
        return key
    text = str(key)
    return next((k for k in node if _key_text(k) == text), _MISSING)


def _key_line(node: CommentedMap, key: Any) -> int | None:
    """1-based line of ``key`` in ``node``, or in the mapping a YAML merge took it from."""
    try:
        return node.lc.key(key)[0] + 1
    except (KeyError, TypeError, IndexError, AttributeError):
        pass
    for source in list(getattr(node, "merge", None) or []):  # <<: *anchor
        source = source[1] if isinstance(source, tuple) else source
        if isinstance(source, CommentedMap) and key in source:
            return _key_line(source, key)
    return None


@dataclass(frozen=True)
class SourceMap:
    """Where each part of a scenario came from, so later stages can name file and line."""

    file: str
    doc: Any

    def line(self, loc: Iterable[str | int]) -> int | None:
        """1-based line of the deepest node on ``loc`` present in the file.

        Parts of ``loc`` that are not in the file (a missing key, a default) leave the line
        at the deepest part that is. Keys brought in by a YAML merge (``<<: *anchor``) are
        found where the anchor defines them.
        """
        if self.doc is None:
            return None
        node = self.doc
        line = getattr(getattr(node, "lc", None), "line", None)
        line = 1 if line is None else line + 1
        for key in loc:
            if isinstance(node, CommentedMap):
                k = _child_key(node, key)
                if k is _MISSING:
                    continue  # a missing key or a union tag: stay at the parent's line
                line = _key_line(node, k) or line
                node = node[k]
            elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
                try:
                    line = node.lc.item(key)[0] + 1
                except (KeyError, TypeError, IndexError):
                    pass
                node = node[key]
        return line

    def problem(self, loc: Loc, message: str) -> Problem:
        line = self.line(loc)
        return Problem(self.file, line if line is not None else 1,
                       ".".join(str(k) for k in loc), message)


# --- YAML ---------------------------------------------------------------------------------


def _yaml_error(e: YAMLError, text: str, file: str) -> SimnetError:
    """A YAML syntax error as a problem on the line where the parser stopped."""
    if isinstance(e, MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        problem, context = str(e.problem or "").strip(), str(e.context or "").strip()
        message = problem or context or "cannot parse"
        if problem and context and not context.startswith("while"):
            message = f"{context} {problem}"  # "expected a single document ... but found ..."
        elif problem and context:
            where = ""
            if e.context_mark is not None and (
                    e.problem_mark is None or e.context_mark.line != e.problem_mark.line):
                where = f" at line {e.context_mark.line + 1}"
            message = f"{problem} ({context}{where})"
        return SimnetError(Problem(file, mark.line + 1 if mark else 1, "",
                                   f"invalid YAML: {' '.join(message.split())}"))
    if isinstance(e, ReaderError):
        line = text.count("\n", 0, max(0, e.position)) + 1
        char = e.character
        code = ord(char) if isinstance(char, str) and len(char) == 1 else char
        shown = f"#x{code:04x}" if isinstance(code, int) else repr(char)
        return SimnetError(Problem(file, line, "",
                                   f"invalid YAML: unacceptable character {shown}: {e.reason}"))
    return SimnetError(Problem(file, 1, "", f"invalid YAML: {' '.join(str(e).split())}"))


def _duplicate_keys(root: Any, file: str) -> list[Problem]:
    """Every key that appears twice in one mapping, at its second appearance.

    Walks the composed node graph iteratively (aliases may make it cyclic or deep).
    """
    problems: list[Problem] = []
    seen: set[int] = set()
    stack: list[tuple[Any, Loc]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode) and key_node.tag != MERGE_TAG:
                    key = str(key_node.value)
                    line = key_node.start_mark.line + 1
                    if key in first:
                        problems.append(Problem(file, line, ".".join(map(str, path + (key,))),
                                                f"duplicate key (first on line {first[key]})"))
                        continue
                    first[key] = line
                    stack.append((value_node, path + (key,)))
                else:
                    stack.append((value_node, path))
        elif isinstance(node, SequenceNode):
            stack.extend((v, path + (i,)) for i, v in enumerate(node.value))
    return problems


def _yaml_document(text: str, file: str) -> tuple[Any, list[Problem]]:
    """The round-trip document, and the duplicate keys found in it."""
    try:
        composer = YAML(typ="rt")
        root = composer.compose(text)
        duplicates = _duplicate_keys(root, file)
        loader = YAML(typ="rt")
        loader.allow_duplicate_keys = True  # reported above, with every duplicate's line
        return loader.load(text), duplicates
    except YAMLError as e:
        raise _yaml_error(e, text, file) from None


class _Cycle(Exception):
    def __init__(self, loc: Loc):
        self.loc = loc


def _plain(node: Any, loc: Loc = (), active: frozenset[int] = frozenset()) -> Any:
    """ruamel's round-trip containers and scalars as plain Python values."""
    if isinstance(node, (dict, list)):
        if id(node) in active:
            raise _Cycle(loc)
        inner = active | {id(node)}
        if isinstance(node, dict):
            return {_key_text(k): _plain(v, loc + (_key_text(k),), inner) for k, v in node.items()}
        return [_plain(v, loc + (i,), inner) for i, v in enumerate(node)]
    if isinstance(node, (bool, ScalarBoolean)):
        return bool(node)
    if node is None:
        return None
    for t in (int, float, str):
        if isinstance(node, t):
            return t(node)
    return node


# --- the schema, seen from an error's location ----------------------------------------------


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any] | None:
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return [m for m in get_args(tp) if m is not type(None)]
    return None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _literal_values(tp: Any) -> tuple[Any, ...]:
    tp = _unwrap(tp)
    return get_args(tp) if get_origin(tp) is Literal else ()


def _step(tp: Any, key: str | int) -> tuple[Any, bool]:
    """The type below ``tp`` at ``key``, and whether ``key`` names a union member (a "tag"
    pydantic puts in its error locations) rather than a key or index of the file."""
    members = _union_members(tp)
    if members is not None:
        if len(members) == 1:  # X | None: no tag
            return _step(members[0], key)
        for m in members:
            m = _unwrap(m)
            if _is_model(m) and (m.__name__ == key or any(
                    key in _literal_values(f.annotation) for f in m.model_fields.values())):
                return m, True
        return None, True
    tp = _unwrap(tp)
    origin = get_origin(tp)
    if origin is list:
        return get_args(tp)[0], False
    if origin is dict:
        return get_args(tp)[1], False
    if _is_model(tp) and isinstance(key, str):
        field = tp.model_fields.get(key)
        return (field.annotation if field else None), False
    return None, False


def _split(loc: Loc) -> tuple[Loc, Any]:
    """A pydantic location without its union tags, and the schema type it ends at."""
    tp: Any = Scenario
    real: list[str | int] = []
    for key in loc:
        tp, is_tag = _step(tp, key) if tp is not None else (None, False)
        if not is_tag:
            real.append(key)
    return tuple(real), tp


def _type_at(loc: Loc) -> Any:
    tp: Any = Scenario
    for key in loc:
        if tp is None:
            return None
        tp, _ = _step(tp, key)
    return tp


def _discriminator_tags(tp: Any, discriminator: str) -> list[str]:
    tags: list[str] = []
    for m in _union_members(tp) or []:
        m = _unwrap(m)
        if _is_model(m) and discriminator in m.model_fields:
            tags += [str(v) for v in _literal_values(m.model_fields[discriminator].annotation)]
    return tags


# --- messages -----------------------------------------------------------------------------


def _number(v: Any) -> str:
    """A number as YAML spells it: 5 rather than 5.0, .inf and .nan rather than inf and nan."""
    if isinstance(v, float):
        if math.isnan(v):
            return ".nan"
        if math.isinf(v):
            return ".inf" if v > 0 else "-.inf"
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
    return repr(v) if isinstance(v, (int, float)) else str(v)


def _yaml_value(v: Any) -> str:
    """A value as YAML would show it, with its kind, for 'expected X, got Y' messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"the boolean {'true' if v else 'false'}"
    if isinstance(v, int):
        return f"the integer {v}"
    if isinstance(v, float):
        return f"the number {_number(v)}"
    if isinstance(v, str):
        shown = v if len(v) <= 40 else v[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, date):
        return f"the date {v.isoformat()}"
    if isinstance(v, TaggedScalar):
        return f"a value tagged {v.tag}"
    return f"a {type(v).__name__}"


EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}

BOUNDS = {
    "greater_than": ("greater than", "gt"),
    "greater_than_equal": ("at least", "ge"),
    "less_than": ("less than", "lt"),
    "less_than_equal": ("at most", "le"),
}


def _expected(e: dict) -> str | None:
    """What the value should have been, for type errors."""
    if e["type"] in EXPECTED:
        return EXPECTED[e["type"]]
    if e["type"] == "literal_error":
        return e.get("ctx", {}).get("expected", "").replace("'", "") or None
    return None


def _unknown_key_message(loc: Loc) -> str:
    """``loc`` is pydantic's, with union tags: they say which member the key was checked in."""
    parent = _split(loc[:-1])[1]
    members = _union_members(parent)
    parent = _unwrap(members[0] if members and len(members) == 1 else parent)  # X | None
    if not _is_model(parent):
        return "unknown key"
    allowed = list(parent.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


def _message(e: dict, real: Loc) -> str:
    """``real`` is the error's location in the file (pydantic's without union tags)."""
    kind, ctx, got = e["type"], e.get("ctx", {}), e.get("input")
    expected = _expected(e)
    if expected is not None:
        return f"expected {expected}, got {_yaml_value(got)}"
    if kind == "extra_forbidden":
        return _unknown_key_message(tuple(e["loc"]))
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_not_found":
        disc = str(ctx.get("discriminator", "")).strip("'\"")
        tags = _discriminator_tags(_type_at(real), disc)
        return f"needs {disc!r}: one of {', '.join(tags)}" if tags else f"needs {disc!r}"
    if kind == "union_tag_invalid":
        disc = str(ctx.get("discriminator", "")).strip("'\"")
        tags = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"unknown {disc} {ctx.get('tag')!r}: expected one of {tags}"
    if kind in BOUNDS:
        words, key = BOUNDS[kind]
        return f"must be {words} {_number(ctx.get(key))}, got {_number(got)}"
    if kind == "finite_number":
        return f"must be a finite number, got {_number(got)}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}, got {got!r}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return f"needs at least {n} item{'s' if n != 1 else ''}"
    message = str(e["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return re.sub(r"^Input should be\b", "must be", message)


def _schema_problems(err: ValidationError, source: SourceMap) -> Iterator[Problem]:
    """pydantic's errors as problems: tags dropped from paths, messages in the file's terms.

    Errors that several members of a plain union report on the same value (``int |
    Literal['auto']``) become one problem: "expected an integer or auto, got ...".
    """
    groups: dict[Loc, list[tuple[dict, str, Loc]]] = {}
    for e in err.errors(include_url=False):
        real, _ = _split(tuple(e["loc"]))
        message = _message(e, real)
        groups.setdefault(real, []).append((e, message, real))

    def problem(real: Loc, line_loc: Loc, message: str) -> Problem:
        return Problem(source.file, source.line(line_loc) or 1, ".".join(map(str, real)), message)

    for real, errors in groups.items():
        expected = [_expected(e) for e, _, _ in errors]
        if len(errors) > 1 and all(expected):
            message = (f"expected {' or '.join(dict.fromkeys(expected))}, "
                       f"got {_yaml_value(errors[0][0].get('input'))}")
            yield problem(real, errors[0][2], message)
        elif len(errors) > 1 and any(expected):
            # One member of the union took the value's type and found it out of bounds
            # (``-5`` for ``int >= 0 | 'auto'``): report that, naming the alternatives.
            alternatives = " or ".join(dict.fromkeys(x for x in expected if x))
            for (_, message, line_loc), x in zip(errors, expected):
                if x is None:
                    yield problem(real, line_loc, f"{message} (or {alternatives})")
        else:
            for message, line_loc in dict.fromkeys((m, at) for _, m, at in errors):
                yield problem(real, line_loc, message)


# --- cross-references ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Parts:
    """The parts of a scenario cross-references need; ``None`` where a part is invalid.

    ``app_names`` holds every app name in the file, valid app or not, so that a reference
    to an app with an unrelated mistake is not reported as a reference to no app.
    """

    apps: list[App | None] | None
    app_names: set[str] | None
    routes: list[Route | None] | None
    clients: list[Client | None]
    faults: list[Any]
    duration_s: float | None
    platform: str | None = None
    router_count: int | None = None

    @classmethod
    def of(cls, s: Scenario) -> _Parts:
        return cls(list(s.apps), {a.name for a in s.apps}, list(s.routes), list(s.clients),
                   list(s.faults), s.duration_s, s.platform, s.routers.count)

    @classmethod
    def of_raw(cls, data: dict) -> _Parts:
        """Best effort on a file that failed validation: each item validated on its own."""

        def each(key: str, adapter: TypeAdapter) -> list | None:
            raw = data.get(key, [])
            if not isinstance(raw, list):
                return None
            out = []
            for item in raw:
                try:
                    out.append(adapter.validate_python(item, strict=True))
                except (ValidationError, ValueError, TypeError):
                    out.append(None)
            return out

        apps = each("apps", _APP)
        raw_apps = data.get("apps")
        names = None
        if isinstance(raw_apps, list):
            names = {a["name"] for a in raw_apps
                     if isinstance(a, dict) and isinstance(a.get("name"), str)}
        duration = data.get("duration_s", Scenario.model_fields["duration_s"].default)
        if not (isinstance(duration, (int, float)) and not isinstance(duration, bool)
                and 0 < duration <= 86_400):
            duration = None
        platform = data.get("platform", Scenario.model_fields["platform"].default)
        routers = data.get("routers")
        default = Routers.model_fields["count"].default
        count = routers.get("count", default) if isinstance(routers, dict) else default
        return cls(apps, names, each("routes", _ROUTE), each("clients", _CLIENT) or [],
                   each("faults", _FAULT) or [], duration,
                   platform if isinstance(platform, str) else None,
                   count if isinstance(count, int) and not isinstance(count, bool) else None)


_APP = TypeAdapter(App)
_ROUTE = TypeAdapter(Route)
_CLIENT = TypeAdapter(Client)
_FAULT = TypeAdapter(Fault)


class Ref(NamedTuple):
    """A problem a cross-reference check found. ``code``: the ``simnet analyze`` finding it is
    (simnet/analysis/catalogue.yaml); the loader rejects it either way, the analyzer reports
    coded ones as findings and goes on."""

    loc: Loc
    message: str
    code: str | None = None


RESERVED_PORT = "SIM0001"
PORT_COLLISION = "SIM0002"
ROUTE_WEIGHTS = "SIM0009"
ROUTE_PORT_UNSERVED = "SIM0010"


def _reserved(port: int) -> str:
    return f"port {port} is reserved for container-to-container TLS"


def _references(p: _Parts) -> Iterator[Ref]:
    apps: dict[str, App] = {}
    seen: set[str] = set()
    for i, app in enumerate(p.apps or []):
        if app is None:
            continue
        if app.name in seen:
            yield Ref(("apps", i, "name"), f"duplicate app name {app.name!r}")
        seen.add(app.name)
        apps.setdefault(app.name, app)
        for k, port in enumerate(app.ports):
            if port == C2C_TLS_PORT:
                yield Ref(("apps", i, "ports", k), _reserved(port), RESERVED_PORT)
        owner: dict[int, str] = {}
        for j, sc in enumerate(app.sidecars):
            for k, port in enumerate(sc.ports):
                loc = ("apps", i, "sidecars", j, "ports", k)
                if port in app.ports:
                    yield Ref(loc, (
                        f"port {port} is already the app's port: sidecars share the network "
                        "namespace, so two processes cannot listen on it"
                    ), PORT_COLLISION)
                elif port == C2C_TLS_PORT:
                    yield Ref(loc, _reserved(port), RESERVED_PORT)
                elif port in owner and owner[port] != sc.name:
                    yield Ref(loc, (
                        f"port {port} is already sidecar {owner[port]!r}'s: sidecars share the "
                        "network namespace, so two processes cannot listen on it"
                    ), PORT_COLLISION)
                owner.setdefault(port, sc.name)
        if p.duration_s is not None and app.start_s >= p.duration_s:
            yield Ref(("apps", i, "start_s"), (
                f"at or after the end of the run ({p.duration_s:g} s): this app never starts"))
    names = p.app_names

    def unknown(name: str) -> bool:
        return names is not None and name not in names

    hosts: set[str] = set()
    hosts_known = p.routes is not None
    for i, r in enumerate(p.routes or []):
        if r is None:
            hosts_known = False  # an invalid route might have been the one a client needs
            continue
        hosts.add(r.host)
        if unknown(r.app):
            yield Ref(("routes", i, "app"), f"no app named {r.app!r}")
        elif r.app in apps and r.port not in apps[r.app].ports:
            yield Ref(("routes", i, "port"), (
                f"app {r.app!r} does not listen on {r.port} (its ports: {apps[r.app].ports})"
            ), ROUTE_PORT_UNSERVED)
        if p.duration_s is not None and r.at_s >= p.duration_s:
            yield Ref(("routes", i, "at_s"), f"at or after the end of the run ({p.duration_s:g} s)")
    yield from _weight_problems(p)
    for i, c in enumerate(p.clients):
        if c is None:
            continue
        if hosts_known and c.host not in hosts:
            known = f" (routes: {', '.join(sorted(hosts))})" if hosts else " (there are no routes)"
            yield Ref(("clients", i, "host"), f"no route for host {c.host!r}{known}")
        if p.duration_s is not None and c.start_s >= p.duration_s:
            yield Ref(("clients", i, "start_s"), (
                f"at or after the end of the run ({p.duration_s:g} s): this client never sends"
            ))
    for i, f in enumerate(p.faults):
        if f is None:
            continue
        if f.kind == "restart_router":
            if p.router_count is not None and f.router >= p.router_count:
                yield Ref(("faults", i, "router"), (
                    f"there are {p.router_count} router(s) (0-{p.router_count - 1}); "
                    f"index {f.router} does not exist"))
        if not hasattr(f, "app"):  # router and link faults
            if p.duration_s is not None and f.at_s > p.duration_s:
                yield Ref(("faults", i, "at_s"), f"after the end of the run ({p.duration_s:g} s)")
            continue
        if unknown(f.app):
            yield Ref(("faults", i, "app"), f"no app named {f.app!r}")
        elif f.app in apps and f.instance >= apps[f.app].instances:
            yield Ref(("faults", i, "instance"), (
                f"app {f.app!r} has {apps[f.app].instances} instance(s) (0-"
                f"{apps[f.app].instances - 1}); index {f.instance} does not exist"
                if apps[f.app].instances else
                f"app {f.app!r} has no instances; index {f.instance} does not exist"
            ))
        if p.duration_s is not None and f.at_s > p.duration_s:
            yield Ref(("faults", i, "at_s"), f"after the end of the run ({p.duration_s:g} s)")
        elif f.app in apps and f.at_s < apps[f.app].start_s:
            yield Ref(("faults", i, "at_s"), (
                f"app {f.app!r} is pushed at {apps[f.app].start_s:g} s: no instance runs yet"))
        if f.kind == "move":
            if unknown(f.reused_by):
                yield Ref(("faults", i, "reused_by"), f"no app named {f.reused_by!r}")
            elif f.reused_by == f.app:
                yield Ref(("faults", i, "reused_by"), (
                    "must be another app: the move fault tests that a stale route to the old "
                    "address never reaches a different app"
                ))


def _weight_problems(p: _Parts) -> Iterator[Ref]:
    """Weights are cf-for-k8s's: at every moment, all or none of a route's destinations carry
    one, and they sum to 100 (the RouteController rejects anything else). Mapping an app's port
    to the route again later sets its new weight."""
    groups: dict[tuple[str, str], list[tuple[int, Route]]] = {}
    for i, r in enumerate(p.routes or []):
        if r is not None:
            groups.setdefault((r.host, r.path), []).append((i, r))
    for (host, path), members in groups.items():
        if all(r.weight is None for _, r in members):
            continue
        if p.platform not in (None, "istio"):
            for i, r in members:
                if r.weight is not None:
                    yield Ref(("routes", i, "weight"), (
                        f"weights are cf-for-k8s (platform: istio) only; {p.platform} balances "
                        "over every instance of every app mapped to the route"))
            continue
        for at in sorted({r.at_s for _, r in members}):
            latest: dict[tuple[str, int], tuple[int, Route]] = {}
            for i, r in sorted(members, key=lambda m: (m[1].at_s, m[0])):
                if r.at_s <= at:
                    latest[r.app, r.port] = (i, r)
            now = sorted(latest.values(), key=lambda m: m[0])
            where = f"route {host}{path} at {at:g} s"
            weighted = [(i, r) for i, r in now if r.weight is not None]
            if weighted and len(weighted) < len(now):
                i = next(i for i, r in now if r.weight is None)
                yield Ref(("routes", i, "weight"), (
                    f"{where}: weights must be given for all of its destinations or none"),
                    ROUTE_WEIGHTS)
                break
            if weighted and (total := sum(r.weight for _, r in weighted)) != 100:
                yield Ref(("routes", weighted[-1][0], "weight"), (
                    f"{where}: destination weights sum to {total}, not 100"), ROUTE_WEIGHTS)
                break


def reference_problems(s: Scenario) -> Iterator[Ref]:
    """Cross-references the schema cannot see: unknown apps, ports no app listens on, clashes,
    istio-iptables fields."""
    yield from _references(_Parts.of(s))
    yield from _capture_problems(s)


def _capture_problems(s: Scenario) -> Iterator[Ref]:
    if not s.capture.istio:
        return
    if s.platform != "istio":
        yield Ref(("capture", "istio"), "istio-iptables settings need platform: istio")
        return
    from simnet.model.istio_config import IstioConfig  # the model imports the schema

    try:
        IstioConfig.from_mapping(s.capture.istio)
    except SimnetError as e:
        for p in e.problems:
            yield Ref(("capture", "istio", p.field) if p.field else ("capture", "istio"), p.message)


def _certificate_problems(s: Scenario, file: str, source: SourceMap) -> list[Problem]:
    """Every ``certificates`` file must hold PEM certificates (errors name that file's line)."""
    from simnet.credentials import certificates

    problems = []
    for i, c in enumerate(s.certificates):
        try:
            certificates(relative_to(file, c.file), f"certificates[{i}].file")
        except SimnetError as e:
            problems += [source.problem(("certificates", i, "file"), str(p)) for p in e.problems]
    return problems


def relative_to(scenario_file: str, path: str) -> Path:
    """A path the scenario names, relative to the scenario file (as given for text)."""
    p = Path(path)
    return p if p.is_absolute() or scenario_file == "<string>" else Path(scenario_file).parent / p


# --- entry points -------------------------------------------------------------------------


def load_text(text: str, file: str = "<string>", findings: list[tuple[str, Problem]] | None = None
              ) -> tuple[Scenario, SourceMap]:
    """Parse and validate scenario text; raise SimnetError listing every problem (with
    ``findings``, see ``_load_text``)."""
    try:
        return _load_text(text, file, findings)
    except RecursionError:
        raise SimnetError(Problem(file, 1, "", "the document is nested too deeply")) from None


def _load_text(text: str, file: str, findings: list[tuple[str, Problem]] | None = None
               ) -> tuple[Scenario, SourceMap]:
    """The loader; with ``findings``, coded cross-reference problems go there as (code,
    problem) instead of failing the load (``simnet analyze`` reports them with their code)."""
    doc, problems = _yaml_document(text, file)
    source = SourceMap(file, doc)
    if doc is None:
        raise SimnetError(Problem(file, 1, "", (
            "the file is empty: a scenario is a YAML mapping with at least name, cells and apps"
        )))
    if not isinstance(doc, CommentedMap):
        got = _yaml_value(_plain_or(doc))
        raise SimnetError(Problem(file, source.line(()) or 1, "", (
            f"a scenario must be a YAML mapping (key: value lines), got {got}"
        )))
    try:
        data = _plain(doc)
    except _Cycle as c:
        raise SimnetError(problems + [source.problem(c.loc, "an alias refers to a mapping or list "
                                                     "that contains it (recursive structure)")]
                          ) from None
    if isinstance(data.get("bosh_manifest"), str):
        problems += _with_manifest(data, file, source)
    try:
        scenario = Scenario.model_validate(data, strict=True)
    except ValidationError as err:
        problems += _schema_problems(err, source)
        problems += [source.problem(r.loc, r.message) for r in _references(_Parts.of_raw(data))]
        raise SimnetError(problems) from None
    for r in reference_problems(scenario):
        if r.code is not None and findings is not None:
            findings.append((r.code, source.problem(r.loc, r.message)))
        else:
            problems.append(source.problem(r.loc, r.message))
    problems += _certificate_problems(scenario, file, source)
    if problems:
        raise SimnetError(problems)
    return scenario, source


def _with_manifest(data: dict, file: str, source: SourceMap) -> list[Problem]:
    """Fill ``apps`` and ``routes`` from the scenario's BOSH manifest (seed 003): every job's
    exposed ports, merged with the scenario's own entries of the same name or host."""
    from simnet.model.bosh import scenario_parts  # the model needs the schema: import late
    from simnet.scenario.bosh_manifest import load_manifest

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


def _plain_or(node: Any) -> Any:
    try:
        return _plain(node)
    except _Cycle:
        return node


def load_scenario(path: str | Path) -> tuple[Scenario, SourceMap]:
    """Load a scenario file; the file name in errors is the path as given."""
    return load_text(_read_scenario(path), str(path))


def load_for_analysis(path: str | Path) -> tuple[Scenario, SourceMap, list[tuple[str, Problem]]]:
    """Load a scenario file keeping apart the problems ``simnet analyze`` has a code for
    (reserved and colliding ports, route weights, unserved route ports) as (code, problem);
    anything else wrong still raises SimnetError."""
    findings: list[tuple[str, Problem]] = []
    scenario, source = load_text(_read_scenario(path), str(path), findings)
    return scenario, source, findings


def _read_scenario(path: str | Path) -> str:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SimnetError(Problem(str(path), None, "", f"cannot read: {e.strerror or e}")) from None
    except UnicodeDecodeError as e:
        line = p.read_bytes().count(b"\n", 0, e.start) + 1
        raise SimnetError(Problem(str(path), line, "", "not UTF-8 text")) from None
    return text.removeprefix("\ufeff")


def _bundled_directory() -> Path:
    """The one copy of the bundled scenarios: a wheel ships the repository's ``scenarios/``
    inside the package (``setup.py`` copies it to ``simnet/scenarios``); a source tree or an
    editable install reads the repository's own."""
    package = Path(__file__).resolve().parent.parent
    shipped = package / "scenarios"
    return shipped if shipped.is_dir() else package.parent / "scenarios"


BUNDLED = _bundled_directory()
DEFAULT_SCENARIO = "diego-route-integrity"


def bundled(name: str = DEFAULT_SCENARIO) -> Path:
    """Path of a scenario shipped with simnet."""
    return BUNDLED / f"{name}.yaml"


def scenario_path(value: str | Path) -> Path:
    """A scenario file, or the name of a bundled scenario."""
    path = Path(value)
    if not path.exists() and bundled(str(value)).exists():
        return bundled(str(value))
    return path
