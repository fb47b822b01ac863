"""Resolve a run's configuration: defaults < YAML file < command-line flags, validated once.

A YAML config holds PruneConfig fields at the top level and HealConfig fields under ``heal:``.
Unknown keys are rejected with the list of allowed ones; every problem is reported together.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from interlace.heal import HealConfig
from interlace.pipeline import EMBEDDED_HEAL, ConfigError, PruneConfig

PRUNE_KEYS = {f.name for f in dataclasses.fields(PruneConfig)} - {"heal"}
HEAL_KEYS = {f.name for f in dataclasses.fields(HealConfig)}
# CLI parameters that set a healing field of another name (HealConfig.method vs the selection --method)
FLAG_TO_HEAL = {"method_heal": "method"}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML run config and reject unknown keys (``--config FILE``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path} does not exist; pass a YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
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
    prune = {k: v for k, v in file_values.items() if k != "heal"}
    heal = dict(file_values.get("heal") or {})
    for key, value in flag_values.items():
        if key in FLAG_TO_HEAL:
            heal[FLAG_TO_HEAL[key]] = value
        elif key in HEAL_KEYS and key not in PRUNE_KEYS:
            heal[key] = value
        else:
            prune[key] = value
    embedded = prune.get("model") in (None, "embedded")
    heal_values = {**(EMBEDDED_HEAL if embedded else {}), "seed": prune.get("seed", 0), **heal}
    if heal_values.get("micro_batch_size", 0) > heal_values.get("batch_size", 32) and "micro_batch_size" not in heal:
        heal_values["micro_batch_size"] = heal_values["batch_size"]
    try:
        heal_config = HealConfig(**heal_values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"healing options: {error}") from None
    try:
        return PruneConfig(**prune, heal=heal_config)
    except TypeError as error:
        raise ConfigError(str(error)) from None
