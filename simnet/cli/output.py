"""Where the `simnet` command writes: the rich console, and the one form of failure output.

Bad input never shows a traceback: every problem is a ``FILE:LINE: field.path: message`` line
on stderr and the exit code is 2. A `SimnetError` from a command, and typer's own complaint
about an option's value, both end in :func:`fail` (through :class:`SimnetGroup`).
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from enum import Enum
from typing import Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from simnet.errors import Problem, SimnetError

console = Console()
err_console = Console(stderr=True)

COMMAND_LINE = "<command line>"  # the "file" of a problem with the command's arguments


def fail(e: SimnetError) -> NoReturn:
    """Print every problem of ``e`` on stderr and exit with its code (2), no traceback."""
    sys.stderr.write("".join(f"{p}\n" for p in e.problems))
    raise typer.Exit(e.exit_code)


def bad_argument(option: str, message: str) -> SimnetError:
    """A problem with one option or argument of the command line."""
    return SimnetError(Problem(COMMAND_LINE, None, option, message))


def not_one_of(value: Any, choices: typing.Sequence[Any]) -> str:
    """What is wrong with a value outside its choices: ``must be a or b`` for two,
    ``'x' is not one of a, b, c`` for more."""
    names = [str(c.value if isinstance(c, Enum) else c) for c in choices]
    if len(names) == 2:
        return f"must be {names[0]} or {names[1]}"
    return f"{value!r} is not one of {', '.join(names)}"


class SimnetGroup(TyperGroup):
    """The root command group: a SimnetError raised anywhere in a command, and a bad or missing
    option value (typer's BadParameter, while parsing or from a command), go out through
    :func:`fail` as ``<command line>: --option: message``."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SimnetError as e:
            fail(e)
        except typer.BadParameter as e:
            fail(bad_argument(*_parameter_problem(e)))


def _parameter_problem(e: typer.BadParameter) -> tuple[str, str]:
    """The option (or argument) a BadParameter is about and what is wrong with it."""
    param = e.param
    if param is None:  # raised by a command, naming its parameter
        hint = e.param_hint
        return (hint if isinstance(hint, str) else " / ".join(hint or ())), e.message
    if param.param_type_name == "option":
        name = next((o for o in param.opts if o.startswith("--")), param.opts[0])
    else:
        name = param.metavar or (param.name or "").upper()
    if type(e).__name__ == "MissingParameter":  # typer does not export the class
        return name, "is required"
    given = _given(e)  # None unless typer's own validation refused the value
    choices = _choices(e) if given is not None else None
    if choices is not None:
        return name, not_one_of(given, choices)
    return name, e.message.removeprefix("Value error, ")  # pydantic's prefix, through typer


def _choices(e: typer.BadParameter) -> tuple[Any, ...] | None:
    """The choices of the parameter, from its annotation (a Literal or an Enum), if it has any."""
    try:
        hints = typing.get_type_hints(inspect.unwrap(e.ctx.command.callback), include_extras=True)
        hint = hints[e.param.name]
    except (AttributeError, KeyError, NameError, TypeError):  # not a typed command function
        return None
    while typing.get_origin(hint) in (typing.Annotated, typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return tuple(hint)
    return None


def _given(e: typer.BadParameter) -> Any:
    """The value given on the command line, where typer's validation error says it."""
    cause = e.__cause__
    errors = cause.errors() if hasattr(cause, "errors") else []  # a pydantic ValidationError
    return errors[0].get("input") if errors else None
