"""YAML inputs with their locations: parsing that puts every problem on its line, plain data,
and a ``SourceMap`` from a key path back to file and line, shared by every YAML loader
(scenarios, sweeps, Route resources, BOSH manifests) so all report ``FILE:LINE: field: message``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarbool import ScalarBoolean

from simnet.errors import Error, Loc, Problem, SimnetError

__all__ = [
    "MERGE_TAG", "AliasCycle", "Loc", "SourceMap", "duplicate_keys", "plain", "relative_to",
    "yaml_document", "yaml_documents", "yaml_error",
]

MERGE_TAG = "tag:yaml.org,2002:merge"
FLOAT_TAG = "tag:yaml.org,2002:float"


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
    """Where each part of a YAML document came from, so later stages can name file and line."""

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


def relative_to(document_file: str, path: str) -> Path:
    """A path a document names, relative to the document's file (as given for text, whose
    file is ``<string>``)."""
    p = Path(path)
    return p if p.is_absolute() or document_file == "<string>" else Path(document_file).parent / p


# --- YAML ---------------------------------------------------------------------------------


def yaml_error(e: YAMLError, text: str, file: str) -> SimnetError:
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


def duplicate_keys(root: Any, file: str) -> list[Problem]:
    """Every key that appears twice in one mapping of a composed node graph, at its second
    appearance.

    Walks the graph iteratively (aliases may make it cyclic or deep).
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


def yaml_document(text: str, file: str) -> tuple[Any, list[Problem]]:
    """The round-trip document, and the duplicate keys found in it; raise SimnetError for
    text that is not YAML."""
    try:
        composer = YAML(typ="rt")
        root = composer.compose(text)
        duplicates = duplicate_keys(root, file)
        loader = YAML(typ="rt")
        loader.allow_duplicate_keys = True  # reported above, with every duplicate's line
        return loader.load(text), duplicates
    except YAMLError as e:
        raise yaml_error(e, text, file) from None
    except ValueError as e:  # ruamel's float resolver matches "._", its constructor refuses it
        raise number_error(e, [root], file) from None


def yaml_documents(text: str, file: str) -> list[Any]:
    """Every round-trip document of a multi-document text; raise SimnetError for text that
    is not YAML (a duplicate key included)."""
    try:
        return list(YAML(typ="rt").load_all(text))
    except YAMLError as e:
        raise yaml_error(e, text, file) from None
    except ValueError as e:
        raise number_error(e, list(YAML(typ="rt").compose_all(text)), file) from None


def number_error(e: ValueError, roots: list[Any], file: str) -> SimnetError:
    """A plain scalar ruamel resolves as a float and cannot convert ("._"), located."""
    stack, seen = list(roots), set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            stack.extend(v for kv in node.value for v in kv)
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
        elif node.tag == FLOAT_TAG and not any(c.isdigit() for c in node.value) \
                and node.value.lstrip("+-").lower() not in (".inf", ".nan"):
            return SimnetError(Problem(file, node.start_mark.line + 1, "", (
                f"invalid YAML: {node.value!r} reads as a number and is not one "
                "(quote it for a string)")))
    return SimnetError(Problem(file, 1, "", f"invalid YAML: {e}"))


# --- plain data ---------------------------------------------------------------------------


class AliasCycle(Error):
    """An alias refers to a mapping or list that contains it: the data has no plain form.
    ``loc`` is where the alias is."""

    def __init__(self, loc: Loc):
        super().__init__(".".join(map(str, loc)))
        self.loc = loc


def plain(node: Any, loc: Loc = (), active: frozenset[int] = frozenset()) -> Any:
    """ruamel's round-trip containers and scalars as plain Python values; raise AliasCycle
    for a recursive structure."""
    if isinstance(node, (dict, list)):
        if id(node) in active:
            raise AliasCycle(loc)
        inner = active | {id(node)}
        if isinstance(node, dict):
            return {_key_text(k): plain(v, loc + (_key_text(k),), inner) for k, v in node.items()}
        return [plain(v, loc + (i,), inner) for i, v in enumerate(node)]
    if isinstance(node, (bool, ScalarBoolean)):
        return bool(node)
    if node is None:
        return None
    for t in (int, float, str):
        if isinstance(node, t):
            return t(node)
    return node
