"""Resolve a run's configuration: defaults < YAML file < command-line flags, validated once.

A YAML config holds PruneConfig fields at the top level and HealConfig fields under ``heal:``.
Unknown keys are rejected with the list of allowed ones, and every value is checked against its
field's declared type with the key named (issue 16); every problem is reported together.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from interlace.heal import HealConfig
from interlace.pipeline import EMBEDDED_HEAL, ConfigError, PruneConfig, validate
from interlace.typecheck import check_value, field_types

PRUNE_TYPES = {k: v for k, v in field_types(PruneConfig).items() if k != "heal"}
HEAL_TYPES = field_types(HealConfig)
PRUNE_KEYS = set(PRUNE_TYPES)
HEAL_KEYS = set(HEAL_TYPES)
# CLI parameters that set a healing field of another name (HealConfig.method vs the selection --method)
FLAG_TO_HEAL = {"method_heal": "method"}


class _Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where a float needs a dot: ``lr: 1e-3`` would load as the string
    "1e-3". YAML 1.2 (and every user) reads it as a number; so does this loader."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def fit_micro_batch(batch_size: int, micro_batch_size: int) -> int:
    """The largest micro-batch <= micro_batch_size that divides batch_size: the default micro-batch
    for a --batch-size given alone (48 with the embedded default 32 gives 24)."""
    return max(d for d in range(1, max(1, min(batch_size, micro_batch_size)) + 1) if batch_size % d == 0)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML run config and reject unknown keys (``--config FILE``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path} does not exist; pass a YAML file")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"--config {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path} must hold a mapping of keys to values, got {type(data).__name__}")
    heal = data.get("heal") or {}
    problems = []
    unknown = sorted(set(data) - PRUNE_KEYS - {"heal"})
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)} in --config {path}; allowed: {', '.join(sorted(PRUNE_KEYS | {'heal'}))}")
    if not isinstance(heal, dict):
        problems.append(f"'heal' in --config {path} must be a mapping of healing options")
    elif unknown_heal := sorted(set(heal) - HEAL_KEYS):
        problems.append(f"unknown heal key(s) {', '.join(unknown_heal)} in --config {path}; allowed: {', '.join(sorted(HEAL_KEYS))}")
    if problems:
        raise ConfigError("; ".join(problems))
    return data


def resolve_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> PruneConfig:
    """Merge YAML values and explicitly given flags (flags win) into a PruneConfig.

    Args:
        file_values: the parsed YAML (may be empty); healing options under "heal".
        flag_values: only the flags the user typed, prune keys and heal keys mixed.
    """
    problems: list[str] = []
    heal_keys = set(file_values.get("heal") or {})
    prune, heal = {}, {}
    for key, value in file_values.items():
        if key == "heal":
            for heal_key, heal_value in (value or {}).items():
                _put(heal, heal_key, heal_value, HEAL_TYPES.get(heal_key), f"heal.{heal_key} in --config", problems)
        else:
            _put(prune, key, value, PRUNE_TYPES.get(key), f"{key} in --config", problems)
    for key, value in flag_values.items():
        flag = "--" + key.replace("_", "-")
        if key in FLAG_TO_HEAL:
            _put(heal, FLAG_TO_HEAL[key], value, HEAL_TYPES[FLAG_TO_HEAL[key]], flag, problems)
            heal_keys.add(FLAG_TO_HEAL[key])
        elif key in HEAL_KEYS and key not in PRUNE_KEYS:
            _put(heal, key, value, HEAL_TYPES[key], flag, problems)
            heal_keys.add(key)
        else:
            _put(prune, key, value, PRUNE_TYPES.get(key), flag, problems)
    embedded = prune.get("model") in (None, "embedded")
    heal_values = {**(EMBEDDED_HEAL if embedded else {}), "seed": prune.get("seed", 0), **heal}
    if "micro_batch_size" not in heal_keys and isinstance(heal_values.get("batch_size", 32), int) and heal_values.get("batch_size", 32) >= 1:
        # Only --batch-size was given: pick a micro-batch that divides it rather than refuse it.
        heal_values["micro_batch_size"] = fit_micro_batch(heal_values.get("batch_size", 32), heal_values.get("micro_batch_size", 4))
    heal_config = None
    try:
        heal_config = HealConfig(**heal_values)
    except (TypeError, ValueError) as error:
        problems.append(f"healing options: {error}")
    try:
        config = PruneConfig(**prune, heal=heal_config)
    except TypeError as error:
        raise ConfigError("; ".join([*problems, str(error)])) from None
    if problems:  # add what validate finds in the rest, so that every problem is reported at once
        try:
            validate(config)
        except ConfigError as error:
            problems.append(str(error))
        raise ConfigError("; ".join(problems))
    return config


def _put(values: dict[str, Any], key: str, value: Any, hint: Any, name: str, problems: list[str]) -> None:
    """values[key] = value when it has its declared type (unknown keys pass: PruneConfig refuses them)."""
    if hint is None:
        values[key] = value
        return
    value, problem = check_value(name, value, hint)
    if problem:
        problems.append(problem)
    else:
        values[key] = value
