"""A run's configuration, in three modules that import one another in one direction
(options <- validation <- merge):

- ``options``: ``PruneConfig``, ``HealConfig`` and their defaults; imports nothing heavy.
- ``validation``: ``validate`` and the checks that read the model, the data, the methods and the
  disk, and the defaults that depend on the model (``default_heal``, ``with_model_defaults``).
- ``merge``: a YAML run config and the command line's flags merged into one PruneConfig
  (defaults < ``--config FILE`` < flags).

The names users import (``from interlace.config import PruneConfig, validate``) are re-exported
here, each loaded on first use (PEP 562), so that ``import interlace.config.options`` loads
neither the checks nor PyYAML.
"""

from __future__ import annotations

import importlib
from typing import Any

_OPTIONS = (
    "ConfigError", "DEFAULT_METHOD", "DTYPES", "EMBEDDED_HEAL", "EMBEDDED_TRAIN_SAMPLES", "HealConfig", "PAPER_LR",
    "PruneConfig", "SMALL_MODEL_LR", "SMALL_MODEL_PARAMETERS", "config_json", "fit_micro_batch", "heal_lr", "is_embedded",
)  # fmt: skip
_VALIDATION = (
    "RESUME_FREE", "count_problems", "default_heal", "eval_count_problems", "eval_problems", "input_problems", "lr_note",
    "method_problems", "parameter_count", "path_problems", "protect_problems", "report_dir_problems",
    "train_sample_count", "validate", "with_model_defaults",
)  # fmt: skip
_MERGE = (
    "FLAG_TO_HEAL", "HEAL_KEYS", "HEAL_PARAMS", "HEAL_TYPES", "MAX_YAML_BYTES", "MAX_YAML_DEPTH", "PRUNE_KEYS",
    "PRUNE_TYPES", "read_yaml", "resolve_config",
)  # fmt: skip
_EXPORTS = {
    **dict.fromkeys(_OPTIONS, "interlace.config.options"),
    **dict.fromkeys(_VALIDATION, "interlace.config.validation"),
    **dict.fromkeys(_MERGE, "interlace.config.merge"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'interlace.config' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
