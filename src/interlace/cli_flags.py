"""Command-line flags generated from the run configs, so that each option's name, type, default and
help live once, in ``PruneConfig`` and ``HealConfig`` (a field's help is its line under
"Attributes:" in the class docstring).

A command declares the few parameters of its own (the model argument, ``--json``, ``--threads``)
and takes the config fields with ``@config_flags(...)``; the generated parameters reach it as
keyword arguments named as in ``FlagSpec.param``. Prune fields default to the dataclass default.
Healing fields default to None: an unset one takes the paper's value or, for the embedded model,
the scaled one (``config.default_heal``), and the help says both.
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

from interlace.config import EMBEDDED_HEAL, HEAL_PARAMS, HealConfig, PruneConfig
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
    help_text = doc[0].upper() + doc[1:] if doc else ""
    if spec.config is HealConfig:
        paper = getattr(HealConfig(), spec.field)
        embedded = f"; embedded model: {EMBEDDED_HEAL[spec.field]}" if EMBEDDED_HEAL.get(spec.field, paper) != paper else ""
        if spec.field == "lr":  # set by model size (config.default_heal), which the doc line states
            help_text += f" (embedded model: {EMBEDDED_HEAL['lr']}; the paper's value: --lr 1e-5)"
        else:
            help_text += f" (default: {paper}{embedded})"  # not [...]: rich reads that as markup
        default = None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    optional = default is None
    annotation = Annotated[Optional[hint] if optional else hint, typer.Option(*flags, help=help_text, show_default=not optional)]
    return inspect.Parameter(spec.param, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


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

    def decorate(func: Callable) -> Callable:
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        taken = {p.name for p in own}
        leading = [p for p in own if p.kind is not inspect.Parameter.KEYWORD_ONLY]  # help lists: arguments, config flags, the rest
        generated = [
            _option(s, hints[s.config][s.field], docs[s.config].get(s.field, ""), defaults.get(s.param, getattr(base[s.config], s.field)))
            for s in specs
            if s.param not in taken  # a command may declare a field itself, with its own help
        ]

        @functools.wraps(func)
        def command(*args, **kwargs):
            return func(*args, **kwargs)

        command.__signature__ = inspect.Signature([*leading, *generated, *[p for p in own if p not in leading]])
        command.flag_specs = specs
        return command

    return decorate
