"""Command-line flags generated from the run configs, so that each option's name, type, default and
help live once, in ``PruneConfig`` and ``HealConfig`` (a field's help is its line under
"Attributes:" in the class docstring).

A command declares the few parameters of its own (the model argument, ``--json``, ``--threads``)
and takes the config fields with ``@config_flags(...)``; the generated parameters reach it as
keyword arguments named as in ``FlagSpec.param``. Prune fields default to the dataclass default.
Healing fields default to None: an unset one takes the paper's value or, for the embedded model,
the scaled one (``config.default_heal``), and the help says both. ``@settings_flags(cls)`` does
the same for any other settings dataclass (`interlace bench`'s ``BenchSettings``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import typer

from interlace.config.merge import HEAL_PARAMS
from interlace.config.options import EMBEDDED_HEAL, HealConfig, PruneConfig
from interlace.typecheck import field_types

# Flags not named after their field (a healing field shared with PruneConfig is renamed by
# config.HEAL_PARAMS: HealConfig.method is --heal-method).
PRUNE_FLAGS = {"do_heal": ("--heal/--no-heal",), "evaluate": ("--eval/--no-eval",)}
# Set through a flag of the other config (HealConfig.seed is --seed) or nested (PruneConfig.heal).
NOT_FLAGS = {PruneConfig: {"model", "heal"}, HealConfig: {"seed"}}


@dataclass(frozen=True)
class FlagSpec:
    """One generated option: the config and field it sets, and the command's parameter name."""

    config: type
    field: str
    param: str


def attribute_docs(cls: type) -> dict[str, str]:
    """{field: its description} from the "Attributes:" block of ``cls``'s docstring, one line each."""
    text = inspect.getdoc(cls) or ""
    block = text.split("Attributes:", 1)[1] if "Attributes:" in text else ""
    docs: dict[str, str] = {}
    name = None
    for line in block.splitlines():
        match = re.match(r"^    (\w+): (.*)$", line)
        if match:
            name, docs[match[1]] = match[1], match[2]
        elif name and line.startswith("        "):
            docs[name] += " " + line.strip()
        elif line.strip():
            break  # the block ends at the next unindented text
    return {k: v.replace("``", "`") for k, v in docs.items()}


def _specs(config: type, fields: Iterable[str] | None) -> list[FlagSpec]:
    names = [f.name for f in dataclasses.fields(config) if f.name not in NOT_FLAGS[config]]
    chosen = names if fields is None else list(fields)
    unknown = set(chosen) - set(names)
    if unknown:
        raise ValueError(f"{config.__name__} has no flag for {sorted(unknown)}")
    param = (lambda f: HEAL_PARAMS.get(f, f)) if config is HealConfig else (lambda f: f)
    return [FlagSpec(config, f, param(f)) for f in chosen]


def _option(spec: FlagSpec, hint: Any, doc: str, default: Any) -> inspect.Parameter:
    flags = PRUNE_FLAGS.get(spec.field, ()) if spec.config is PruneConfig else ()
    help_text = _sentence(doc)
    if spec.config is HealConfig:
        paper = getattr(HealConfig(), spec.field)
        embedded = f"; embedded model: {EMBEDDED_HEAL[spec.field]}" if EMBEDDED_HEAL.get(spec.field, paper) != paper else ""
        if spec.field == "lr":  # set by model size (config.default_heal), which the doc line states
            help_text += f" (embedded model: {EMBEDDED_HEAL['lr']}; the paper's value: --lr 1e-5)"
        else:
            help_text += f" (default: {paper}{embedded})"  # not [...]: rich reads that as markup
        default = None
    return _parameter(spec.param, hint, help_text, default, flags)


def _sentence(doc: str) -> str:
    return doc[0].upper() + doc[1:] if doc else ""


def _parameter(name: str, hint: Any, help_text: str, default: Any, flags: tuple[str, ...] = ()) -> inspect.Parameter:
    """A keyword-only typer option of type ``hint`` (``X | None`` read as X), optional when its default is None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    optional = default is None
    annotation = Annotated[Optional[hint] if optional else hint, typer.Option(*flags, help=help_text, show_default=not optional)]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def _with_options(func: Callable, options: list[inspect.Parameter]) -> Callable:
    """``func`` with ``options`` in its signature, which typer reads (help lists: arguments, the
    generated options, the command's own), but for those it declares itself (with its own help);
    the command receives them as keyword arguments."""
    own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    taken = {p.name for p in own}
    leading = [p for p in own if p.kind is not inspect.Parameter.KEYWORD_ONLY]

    @functools.wraps(func)
    def command(*args, **kwargs):
        return func(*args, **kwargs)

    command.__signature__ = inspect.Signature([*leading, *[o for o in options if o.name not in taken], *[p for p in own if p not in leading]])
    return command


def config_flags(
    prune: Iterable[str] | None = None, heal: Iterable[str] | None = (), defaults: dict[str, Any] | None = None
) -> Callable[[Callable], Callable]:
    """Give a typer command the flags of the named PruneConfig and HealConfig fields (None: all).

    ``defaults`` overrides a prune field's default for this command (e.g. data: None, resolved
    from the model). The command receives them as keyword arguments; ``flag_specs`` on the
    wrapper lists what was added.
    """
    specs = _specs(PruneConfig, prune) + _specs(HealConfig, heal)
    docs = {PruneConfig: attribute_docs(PruneConfig), HealConfig: attribute_docs(HealConfig)}
    hints = {PruneConfig: field_types(PruneConfig), HealConfig: field_types(HealConfig)}
    base = {PruneConfig: PruneConfig(), HealConfig: HealConfig()}
    defaults = defaults or {}
    options = [
        _option(s, hints[s.config][s.field], docs[s.config].get(s.field, ""), defaults.get(s.param, getattr(base[s.config], s.field)))
        for s in specs
    ]

    def decorate(func: Callable) -> Callable:
        command = _with_options(func, options)
        command.flag_specs = specs
        return command

    return decorate


def settings_flags(cls: type, unset: dict[str, str] | None = None) -> Callable[[Callable], Callable]:
    """Give a typer command a flag for every field of the dataclass ``cls`` (``interlace bench``:
    ``BenchSettings``), as ``config_flags`` does for the run configs: the field's type, its
    default, and its line under "Attributes:" as help.

    A field in ``unset`` defaults to None instead, its help ending in the note given: what sets
    the value then (bench: "default 512; --fast 128"). A field the command declares itself, for
    a type the command parses (bench's ``--image-size 448x448``), keeps the command's.
    """
    docs, hints, base = attribute_docs(cls), field_types(cls), cls()
    unset = unset or {}
    options = [
        _parameter(f.name, hints[f.name], _sentence(docs.get(f.name, "")) + (f" ({unset[f.name]})" if f.name in unset else ""),
                   None if f.name in unset else getattr(base, f.name))  # fmt: skip
        for f in dataclasses.fields(cls)
    ]
    return lambda func: _with_options(func, options)
