"""Healing: the survivors of a cut trained back toward the dense model.

``loop`` holds the training loop (``heal``, ``HealResult``, the trainable-parameter rules), ``data``
the samples prepared in DataLoader workers, ``losses`` the objectives, ``teacher`` the dense
model's logits and anchor states, ``state`` the resumable checkpoints. The names users import
(``from interlace.heal import heal, HealConfig``) are re-exported here, loaded on first use so that
importing one submodule does not import the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "heal": "interlace.heal.loop", "HealResult": "interlace.heal.loop", "HealInterrupted": "interlace.heal.loop",
    "NonFiniteLossError": "interlace.heal.loop", "NoAnswerTokensError": "interlace.heal.loop",
    "trainable_parameters": "interlace.heal.loop", "set_trainable": "interlace.heal.loop",
    "load_checkpoint": "interlace.heal.loop", "HealConfig": "interlace.config.options",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'interlace.heal' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
