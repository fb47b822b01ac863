"""What a selection method returns: a ``Plan`` saying what happens to each decoder layer, and the
drop budget K = floor(ratio x L) every method shares."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


class SelectionError(ValueError):
    """The budget cannot be met under the selection rules."""


@dataclass(frozen=True)
class Group:
    """One accepted triplet or pair, in original layer indices."""

    kind: str  # "triplet" or "pair"
    start: int
    drop: int
    finetune: int | None
    anchor: int | None
    score: float


@dataclass
class Plan:
    """What happens to each decoder layer; indices are those of the dense model."""

    method: str
    num_layers: int
    dropped: list[int]
    finetuned: list[int]
    anchors: list[int]
    groups: list[Group] = field(default_factory=list)
    path: str = "triplets"  # "triplets", "triplets+pairs", or a method-specific word
    log: list[str] = field(default_factory=list)
    # The plan chooser's record (``auto``): every candidate with its measures, and the extra cost.
    choice: dict | None = None

    @property
    def kept(self) -> list[int]:
        return [i for i in range(self.num_layers) if i not in set(self.dropped)]

    @property
    def frozen(self) -> list[int]:
        """Kept layers that do not train (anchors included)."""
        return [i for i in self.kept if i not in set(self.finetuned)]

    @property
    def finetuned_after_cut(self) -> list[int]:
        """Positions of the finetuned layers in the pruned model."""
        kept = self.kept
        return [kept.index(i) for i in self.finetuned]

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(kept=self.kept, frozen=self.frozen, finetuned_after_cut=self.finetuned_after_cut)
        return data

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        fields = {k: data[k] for k in ("method", "num_layers", "dropped", "finetuned", "anchors", "path", "log")}
        return cls(groups=[Group(**g) for g in data.get("groups", [])], choice=data.get("choice"), **fields)


def drop_budget(ratio: float, num_layers: int) -> int:
    """K = floor(ratio * L) (Qwen3-VL, L=36: 10/15/20/25% -> 3/5/7/9)."""
    if not 0 < ratio < 1:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    return math.floor(ratio * num_layers + 1e-9)


def check_budget(budget: int, num_layers: int) -> None:
    """Refuse a budget that drops nothing or leaves fewer than 2 of the L layers (every method)."""
    if budget < 1:
        raise SelectionError(f"K = floor(ratio x L) = {budget} removes no layer of {num_layers}; raise --ratio")
    if budget > num_layers - 2:
        raise SelectionError(f"cannot drop {budget} of {num_layers} layers; keep at least 2 by lowering --ratio")


def successors(dropped: list[int], num_layers: int) -> list[int]:
    """The first kept layer after each dropped layer (before it, for a dropped tail)."""
    kept = [i for i in range(num_layers) if i not in set(dropped)]
    chosen: list[int] = []
    for d in dropped:
        after = [k for k in kept if k > d and k not in chosen]
        before = [k for k in reversed(kept) if k < d and k not in chosen]
        pick = after[0] if after else before[0] if before else None
        if pick is not None:
            chosen.append(pick)
    return sorted(chosen)


def plan_from_drops(method: str, num_layers: int, dropped: list[int], finetuned: list[int] | None = None, path: str = "") -> Plan:
    """A plan without triplets: ``dropped`` go, ``finetuned`` (default: each one's successor) heal."""
    dropped = sorted(dropped)
    finetuned = successors(dropped, num_layers) if finetuned is None else sorted(finetuned)
    return Plan(method=method, num_layers=num_layers, dropped=dropped, finetuned=finetuned, anchors=[], path=path or method)
