"""Check config values against their dataclass field types, naming the key.

A YAML file hands over whatever its author wrote: ``ratio: abc``, ``calib_samples: '10'``,
``do_heal: 'no'`` (a string, hence true to Python). Each value is checked against its field's
declared type before any range check compares it, and converted only where nothing is lost (an
int where a float is declared, a string where a Path is).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

_WHAT = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}


def field_types(cls: type) -> dict[str, Any]:
    """{field name: declared type} of a dataclass, with its string annotations resolved."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def check_value(key: str, value: Any, hint: Any) -> tuple[Any, str | None]:
    """``value`` converted to the declared type, or the problem in words (naming ``key``).

    Returns:
        (the value, None) when it fits, possibly converted (int -> float, str -> Path);
        (value, "KEY must be ..., got ...") when it does not.
    """
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else Any
    if value is None and optional:
        return None, None
    if hint is Any:
        return value, None
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is Path:
        ok = isinstance(value, (str, Path))
        value = Path(value) if ok else value
    elif dataclasses.is_dataclass(hint):
        ok = isinstance(value, hint)
    else:
        ok = isinstance(value, hint)
    if ok:
        return value, None
    what = _WHAT.get(hint, getattr(hint, "__name__", str(hint))) + (" or null" if optional else "")
    problem = f"{key} must be {what}, got {value!r} ({type(value).__name__})"
    if isinstance(value, str) and hint in (int, float) and _is_number(value):
        problem += "; write the number without quotes"
    return value, problem


def type_problems(obj: Any, prefix: str = "") -> list[str]:
    """Check every field of a dataclass instance in place (converting lossless ones); the problems."""
    problems = []
    for name, hint in field_types(type(obj)).items():
        value, problem = check_value(prefix + name, getattr(obj, name), hint)
        if problem:
            problems.append(problem)
        else:
            object.__setattr__(obj, name, value)
    return problems


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def expect(value: Any, types: type | tuple[type, ...], name: str, what: str) -> None:
    """The type check at the top of a public function: a wrong argument fails there, naming it,
    instead of as an AttributeError deep inside (``select_layers('interlace', None, 0.25)``).

    Raises:
        TypeError: "NAME must be WHAT, got TYPE".
    """
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
