"""The INTERLACE selection and its triplet-free ablation: pure functions over score arrays (arXiv 2511.19676, method).

INTERLACE: sort triplet starts by S3 (descending, ties to the lower index); accept a triplet when
none of its three layers is assigned yet; drop the one of the first two with the higher S1 (ties
drop the first), finetune the other, keep the third frozen as the anchor. Stop at K drops. When
disjoint triplets run out, fall back to pairs ranked by S2 among unassigned layers (same drop
rule, no anchor). Scores are never recomputed. The released code (github.com/pmadinei/Interlace)
runs it as ``--pruning_strategy interlace``.

INTERLACE-TN, the paper's ablation without triplets: drop the free layer with the highest S1,
finetune the one after it, no anchor (``--pruning_strategy interlace_tn`` in the released code).
"""

from __future__ import annotations

import numpy as np

from interlace.methods.plan import Group, Plan, SelectionError, check_budget, drop_budget, plan_from_drops
from interlace.scores import RedundancyScores


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


def interlace_tn(scores: RedundancyScores, ratio: float, protected=(), use_final_state=False, **_) -> Plan:
    """S1 only: drop the most redundant free layer, finetune its successor, no anchor."""
    s1 = scores.s(1, use_final_state)
    budget, n = drop_budget(ratio, scores.num_layers), scores.num_layers
    assigned: set[int] = set()
    dropped, finetuned = [], []
    for i in sorted(range(len(s1)), key=lambda i: (-s1[i], i)):
        if len(dropped) == budget:
            break
        if i + 1 < n and not {i, i + 1} & assigned and i not in protected:
            assigned |= {i, i + 1}
            dropped.append(i)
            finetuned.append(i + 1)
    if len(dropped) < budget:
        raise SelectionError(f"only {len(dropped)} of {budget} disjoint (drop, next) pairs fit; lower --ratio")
    return plan_from_drops("interlace-tn", n, dropped, finetuned)
