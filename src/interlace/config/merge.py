"""A run config from a YAML file and the command line: defaults < ``--config FILE`` < flags.

A YAML config holds PruneConfig fields at the top level and HealConfig fields under ``heal:``.
``read_yaml`` refuses unknown keys (listing the allowed ones) and files that are not a run config;
``resolve_config`` checks every value against its field's declared type with the key or flag
named, fills the healing defaults (``default_heal``), and reports every problem together.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import yaml

from interlace.config.options import ConfigError, HealConfig, PruneConfig
from interlace.config.validation import default_heal, validate
from interlace.typecheck import check_value, field_types

PRUNE_TYPES = {k: v for k, v in field_types(PruneConfig).items() if k != "heal"}
HEAL_TYPES = field_types(HealConfig)
PRUNE_KEYS = set(PRUNE_TYPES)
HEAL_KEYS = set(HEAL_TYPES)
# Healing fields whose flag carries a heal- prefix: HealConfig.method beside the selection --method,
# and --heal-loss for loss. FLAG_TO_HEAL maps such a flag's parameter back to its field.
HEAL_PARAMS = {"method": "heal_method", "loss": "heal_loss"}
FLAG_TO_HEAL = {param: name for name, param in HEAL_PARAMS.items()}


# A run config is a few dozen keys two levels deep; these limits are far above that and far below
# what could exhaust memory or the stack while loading a hostile file.
MAX_YAML_BYTES = 2**20
MAX_YAML_DEPTH = 16


class _Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where a float needs a dot: ``lr: 1e-3`` would load as the string
    "1e-3". YAML 1.2 (and every user) reads it as a number; so does this loader.

    It also refuses aliases (``*name``) and nesting deeper than MAX_YAML_DEPTH. PyYAML shares an
    aliased node instead of copying it, so a few lines of nested aliases (a "billion laughs") load
    quickly but describe 10**9 values, which anything that walks or prints them (type checks, an
    error message) would try to expand; deep nesting overflows the recursive composer.
    """

    _depth = 0

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a run config; write the value out", self.peek_event().start_mark
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nests deeper than {MAX_YAML_DEPTH} levels; a run config is two levels deep", self.peek_event().start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML run config and reject unknown keys (``--config FILE``)."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"--config {path} does not exist; pass a YAML file") from None
    except OSError as error:  # a name longer than the filesystem allows, a directory not searchable
        raise ConfigError(f"--config {path} cannot be read ({error.strerror}); pass a YAML file") from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or read forever
        raise ConfigError(f"--config {path} is not a regular file; pass a YAML file")
    if info.st_size > MAX_YAML_BYTES:
        raise ConfigError(f"--config {path} is {info.st_size} bytes, more than a run config's limit of {MAX_YAML_BYTES}; pass the YAML run config")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"--config {path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    except OSError as error:
        raise ConfigError(f"--config {path} cannot be read ({error.strerror}); pass a readable YAML file") from None
    try:
        data = yaml.load(text, Loader=_Loader) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"--config {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    except ValueError as error:  # an integer of more digits than Python converts (4300, Python 3.11)
        reason = str(error).splitlines()[0].split("; use sys.set_int_max_str_digits")[0]  # advice for programmers
        raise ConfigError(f"--config {path} holds a value that cannot be read ({reason}); correct that value") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path} must hold a mapping of keys to values, got {type(data).__name__}")
    heal = data.get("heal") or {}
    problems = []
    unknown = sorted(map(str, set(data) - PRUNE_KEYS - {"heal"}))
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)} in --config {path}; allowed: {', '.join(sorted(PRUNE_KEYS | {'heal'}))}")
    if not isinstance(heal, dict):
        problems.append(f"'heal' in --config {path} must be a mapping of healing options")
    elif unknown_heal := sorted(map(str, set(heal) - HEAL_KEYS)):
        problems.append(f"unknown heal key(s) {', '.join(unknown_heal)} in --config {path}; allowed: {', '.join(sorted(HEAL_KEYS))}")
    if problems:
        raise ConfigError("; ".join(problems))
    return data


def resolve_config(file_values: dict[str, Any], flag_values: dict[str, Any], **checks: Any) -> PruneConfig:
    """Merge YAML values and explicitly given flags (flags win) into a PruneConfig.

    Args:
        file_values: the parsed YAML (may be empty); healing options under "heal".
        flag_values: only the flags the user typed, prune keys and heal keys mixed.
        checks: how the command validates the run (``validate``'s keywords: compare's methods,
            sweep's ratios, report=True); used when a value is refused, so that the rest is
            checked as that command checks it and every problem is reported at once.

    Raises:
        ConfigError: a value of the wrong type or out of range, with the rest of the problems.
    """
    problems: list[str] = []
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
        elif key in HEAL_KEYS and key not in PRUNE_KEYS:
            _put(heal, key, value, HEAL_TYPES[key], flag, problems)
        else:
            _put(prune, key, value, PRUNE_TYPES.get(key), flag, problems)
    heal_config = None
    try:
        heal_config = default_heal(prune.get("model"), prune.get("seed", 0), heal)
    except (TypeError, ValueError) as error:
        problems.append(f"healing options: {error}")
    try:
        config = PruneConfig(**prune, heal=heal_config)
    except TypeError as error:
        raise ConfigError("; ".join([*problems, str(error)])) from None
    if problems:  # add what validate finds in the rest, so that every problem is reported at once
        try:
            validate(config, **checks)
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
