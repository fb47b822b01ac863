"""Layers a user protects from removal (``--protect``), on top of those the architecture protects.

Early and final decoder layers are the fragile ones in every layer-pruning study (LLM-Pruner,
arXiv 2305.11627, keeps the first four and the last two by default; Gromov et al., arXiv
2403.17887, and Lu et al., arXiv 2411.15558, find the final layer the costliest to drop). A spec is
a comma list of ``first:N`` (layers 0..N-1), ``last:M`` (the M deepest) and single indices, e.g.
``first:4,last:2`` or ``0,1,29``. The empty spec protects nothing, so ``interlace`` stays the
paper's exact method unless asked otherwise.
"""

from __future__ import annotations

import re

_ITEM = re.compile(r"^(?:(first|last):(\d+)|(\d+))$")
EXAMPLE = "e.g. first:4,last:2 or 0,1,29"


def parse_protect(spec: str, num_layers: int | None = None) -> tuple[int, ...]:
    """The sorted layer indices a ``--protect`` spec names in a model of ``num_layers`` layers.

    Args:
        spec: comma list of ``first:N``, ``last:M`` and indices; "" protects nothing.
        num_layers: the model's depth; None checks only the syntax (``last:M`` then resolves to
            nothing, as its indices are unknown).

    Raises:
        ValueError: an item that is none of the three forms, or an index or count beyond the
            model's layers.
    """
    layers: set[int] = set()
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        match = _ITEM.match(item)
        if match is None:
            raise ValueError(f"--protect {spec!r}: {item!r} is not first:N, last:M or a layer index; write {EXAMPLE}")
        side, count, index = match[1], match[2], match[3]
        value = int(count if side else index)
        if num_layers is not None and (value > num_layers if side else value >= num_layers):
            allowed = f"at most {num_layers}" if side else f"0..{num_layers - 1}"
            raise ValueError(f"--protect {spec!r}: {item} is beyond the model's {num_layers} layers ({allowed}); lower it")
        if side == "first":
            layers.update(range(value))
        elif side == "last" and num_layers is not None:
            layers.update(range(num_layers - value, num_layers))
        elif index is not None:
            layers.add(value)
    return tuple(sorted(layers))


def fragile_layers(num_layers: int) -> tuple[int, ...]:
    """LLM-Pruner's default protection (the first four and the last two layers): what prune's
    default, ``angular+protect``, keeps, and the variant the plan chooser adds to every method;
    shallower models keep a third of their depth at most, so that a 25% budget still fits."""
    first, last = min(4, num_layers // 4), min(2, max(1, num_layers // 12))
    return tuple(sorted({*range(first), *range(num_layers - last, num_layers)}))
