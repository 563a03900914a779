"""pydantic's validation errors as located problems in the input's own terms: union tags dropped
from paths, "expected an integer, got the string 'x'" rather than pydantic's wording, one problem
for what several members of a union report on one value. Any pydantic model can be the root.
"""

from __future__ import annotations

import difflib
import math
import re
import types
from collections.abc import Iterator
from datetime import date
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from ruamel.yaml.comments import TaggedScalar

from simnet.errors import Problem
from simnet.scenario.source import Loc, SourceMap

__all__ = ["BOUNDS", "EXPECTED", "message", "schema_problems", "split_tags", "yaml_value"]


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


def split_tags(loc: Loc, root: type[BaseModel]) -> tuple[Loc, Any]:
    """A pydantic location in a ``root`` without its union tags (the location in the file),
    and the schema type it ends at."""
    tp: Any = root
    real: list[str | int] = []
    for key in loc:
        tp, is_tag = _step(tp, key) if tp is not None else (None, False)
        if not is_tag:
            real.append(key)
    return tuple(real), tp


def _type_at(loc: Loc, root: type[BaseModel]) -> Any:
    tp: Any = root
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


def number(v: Any) -> str:
    """A number as YAML spells it: 5 rather than 5.0, .inf and .nan rather than inf and nan."""
    if isinstance(v, float):
        if math.isnan(v):
            return ".nan"
        if math.isinf(v):
            return ".inf" if v > 0 else "-.inf"
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
    return repr(v) if isinstance(v, (int, float)) else str(v)


def yaml_value(v: Any) -> str:
    """A value as YAML would show it, with its kind, for 'expected X, got Y' messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"the boolean {'true' if v else 'false'}"
    if isinstance(v, int):
        return f"the integer {v}"
    if isinstance(v, float):
        return f"the number {number(v)}"
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


def _unknown_key_message(loc: Loc, root: type[BaseModel]) -> str:
    """``loc`` is pydantic's, with union tags: they say which member the key was checked in."""
    parent = split_tags(loc[:-1], root)[1]
    members = _union_members(parent)
    parent = _unwrap(members[0] if members and len(members) == 1 else parent)  # X | None
    if not _is_model(parent):
        return "unknown key"
    allowed = list(parent.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


def message(e: dict, real: Loc, root: type[BaseModel]) -> str:
    """One pydantic error (``ValidationError.errors()``) of validating a ``root`` as a message;
    ``real`` is the error's location in the file (pydantic's without union tags)."""
    kind, ctx, got = e["type"], e.get("ctx", {}), e.get("input")
    expected = _expected(e)
    if expected is not None:
        return f"expected {expected}, got {yaml_value(got)}"
    if kind == "extra_forbidden":
        return _unknown_key_message(tuple(e["loc"]), root)
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_not_found":
        disc = str(ctx.get("discriminator", "")).strip("'\"")
        tags = _discriminator_tags(_type_at(real, root), disc)
        return f"needs {disc!r}: one of {', '.join(tags)}" if tags else f"needs {disc!r}"
    if kind == "union_tag_invalid":
        disc = str(ctx.get("discriminator", "")).strip("'\"")
        tags = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"unknown {disc} {ctx.get('tag')!r}: expected one of {tags}"
    if kind in BOUNDS:
        words, key = BOUNDS[kind]
        return f"must be {words} {number(ctx.get(key))}, got {number(got)}"
    if kind == "finite_number":
        return f"must be a finite number, got {number(got)}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}, got {got!r}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return f"needs at least {n} item{'s' if n != 1 else ''}"
    text = str(e["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return re.sub(r"^Input should be\b", "must be", text)


def schema_problems(err: ValidationError, source: SourceMap, root: type[BaseModel]
                    ) -> Iterator[Problem]:
    """pydantic's errors of validating a ``root`` as problems: tags dropped from paths,
    messages in the file's terms.

    Errors that several members of a plain union report on the same value (``int |
    Literal['auto']``) become one problem: "expected an integer or auto, got ...".
    """
    groups: dict[Loc, list[tuple[dict, str, Loc]]] = {}
    for e in err.errors(include_url=False):
        real, _ = split_tags(tuple(e["loc"]), root)
        groups.setdefault(real, []).append((e, message(e, real, root), real))

    def problem(real: Loc, line_loc: Loc, text: str) -> Problem:
        return Problem(source.file, source.line(line_loc) or 1, ".".join(map(str, real)), text)

    for real, errors in groups.items():
        expected = [_expected(e) for e, _, _ in errors]
        if len(errors) > 1 and all(expected):
            text = (f"expected {' or '.join(dict.fromkeys(expected))}, "
                    f"got {yaml_value(errors[0][0].get('input'))}")
            yield problem(real, errors[0][2], text)
        elif len(errors) > 1 and any(expected):
            # One member of the union took the value's type and found it out of bounds
            # (``-5`` for ``int >= 0 | 'auto'``): report that, naming the alternatives.
            alternatives = " or ".join(dict.fromkeys(x for x in expected if x))
            for (_, text, line_loc), x in zip(errors, expected):
                if x is None:
                    yield problem(real, line_loc, f"{text} (or {alternatives})")
        else:
            for text, line_loc in dict.fromkeys((m, at) for _, m, at in errors):
                yield problem(real, line_loc, text)
