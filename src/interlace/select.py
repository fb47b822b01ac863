"""Which layers to drop, finetune and freeze: pure functions over score arrays (SPEC 2.3).

INTERLACE: sort triplet starts by S3 (descending, ties to the lower index); accept a triplet when
none of its three layers is assigned yet; drop the one of the first two with the higher S1 (ties
drop the first), finetune the other, keep the third frozen as the anchor. Stop at K drops. When
disjoint triplets run out, fall back to pairs ranked by S2 among unassigned layers (same drop
rule, no anchor). Scores are never recomputed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np


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
        return cls(groups=[Group(**g) for g in data.get("groups", [])], **fields)


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


def _ranked(scores: np.ndarray) -> list[int]:
    """Start indices by score descending; ties keep the lower index first."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def _pick(s1: np.ndarray, i: int, rule: str) -> tuple[int, int]:
    """(drop, finetune) among layers i and i + 1."""
    if rule == "first" or s1[i] >= s1[i + 1]:
        return i, i + 1
    return i + 1, i


def interlace_select(
    s1: np.ndarray,
    s2: np.ndarray,
    s3: np.ndarray,
    budget: int,
    num_layers: int,
    protected: tuple[int, ...] = (),
    drop_rule: str = "higher_s1",
    method: str = "interlace",
) -> Plan:
    """The INTERLACE selection.

    Args:
        s1, s2, s3: s_k(i) by start index i (lengths at most L - k + 1).
        budget: K, the number of layers to drop.
        num_layers: L.
        protected: layers that must never be dropped (they may still train or anchor).
        drop_rule: "higher_s1" (the paper) or "first" (always drop the triplet's first layer, the
            paper's "one-after" ablation).
        method: name recorded in the plan.

    Raises:
        SelectionError: fewer than K drops fit in disjoint triplets and pairs.
    """
    if drop_rule not in ("higher_s1", "first"):
        raise ValueError(f"drop_rule must be 'higher_s1' or 'first', got {drop_rule!r}")
    check_budget(budget, num_layers)
    s1 = np.asarray(s1, dtype=np.float64)
    assigned: set[int] = set()
    groups: list[Group] = []
    log: list[str] = []
    blocked = set(protected)

    def try_accept(kind: str, i: int, width: int, score: float) -> None:
        members = set(range(i, i + width))
        if members & assigned or i + width > num_layers:
            return
        drop, finetune = _pick(s1, i, drop_rule)
        if drop in blocked:
            log.append(f"skipped {kind} at {i}: layer {drop} is protected")
            return
        anchor = i + 2 if kind == "triplet" else None
        assigned.update(members)
        groups.append(Group(kind, i, drop, finetune, anchor, float(score)))

    for i in _ranked(np.asarray(s3)):
        if len(groups) == budget:
            break
        if i + 1 < len(s1):
            try_accept("triplet", i, 3, s3[i])
    path = "triplets"
    if len(groups) < budget:
        log.append(f"only {len(groups)} disjoint triplets; falling back to pairs ranked by S2")
        path = "triplets+pairs"
        for i in _ranked(np.asarray(s2)):
            if len(groups) == budget:
                break
            if i + 1 < len(s1):
                try_accept("pair", i, 2, s2[i])
    if len(groups) < budget:
        raise SelectionError(
            f"only {len(groups)} of {budget} drops fit in disjoint triplets and pairs of {num_layers} layers; "
            "lower --ratio"
        )
    return Plan(
        method=method,
        num_layers=num_layers,
        dropped=sorted(g.drop for g in groups),
        finetuned=sorted(g.finetune for g in groups),
        anchors=sorted(g.anchor for g in groups if g.anchor is not None),
        groups=groups,
        path=path,
        log=log,
    )
