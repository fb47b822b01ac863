"""The training-free layer-removal baselines that need only redundancy scores, and the paper's
block and random ablations: ShortGPT, angular distance (plain, and with the fragile layers kept:
prune's default), reverse order, the deepest block that keeps the final layer, consecutive
blocks, random."""

from __future__ import annotations

import numpy as np

from interlace.methods.plan import Plan, SelectionError, drop_budget, plan_from_drops
from interlace.methods.protect import fragile_layers
from interlace.scores import RedundancyScores


def _top_k(values: np.ndarray, k: int, allowed: list[int]) -> list[int]:
    return sorted(sorted(allowed, key=lambda i: (-values[i], i))[:k])


def shortgpt(scores: RedundancyScores, ratio: float, protected=(), **_) -> Plan:
    """Remove the K layers with the lowest Block Influence, BI = 1 - S1 (all L layers scored)."""
    s1 = scores.s(1, use_final_state=True)
    n = scores.num_layers
    allowed = [i for i in range(n) if i not in protected]
    return plan_from_drops("shortgpt", n, _top_k(s1, drop_budget(ratio, n), allowed))


def angular(scores: RedundancyScores, ratio: float, protected=(), **_) -> Plan:
    """Remove the contiguous block of K layers whose input and output are closest in angle."""
    n, k = scores.num_layers, drop_budget(ratio, scores.num_layers)
    sk = scores.s(k, use_final_state=True)
    distance = np.arccos(np.clip(sk, -1.0, 1.0)) / np.pi
    starts = [i for i in range(n - k + 1) if not set(range(i, i + k)) & set(protected)]
    if not starts:
        raise SelectionError(f"no block of {k} unprotected consecutive layers; lower --ratio")
    best = min(starts, key=lambda i: (distance[i], i))
    return plan_from_drops("angular", n, list(range(best, best + k)))


def angular_protected(scores: RedundancyScores, ratio: float, protected=(), **_) -> Plan:
    """The angular block searched away from the fragile layers (``fragile_layers``: LLM-Pruner's
    first four and last two, arXiv 2305.11627), then healed: prune's default.

    The two rules it joins are Gromov et al.'s (arXiv 2403.17887): the block of least angular
    distance, and their observation that the final layer must stay. Where the plain angular block
    already avoids those layers the plan is the same (SmolLM2-135M: layers 12-18); where it reaches
    the final layer (Gemma 3 270M: 14-17) it moves up by one (13-16), which is the deepest block
    that keeps the final layer and healed best of every plan measured there (docs/benchmarks.md).
    """
    fragile = fragile_layers(scores.num_layers)
    plan = angular(scores, ratio, protected=tuple(sorted({*protected, *fragile})))
    plan.method = plan.path = "angular+protect"
    plan.log.append(f"kept the fragile layers {list(fragile)} (the first and last ones)")
    return plan


# Lu et al. (arXiv 2411.15558, section 4) finetune the last three remaining layers.
REVERSE_HEALED = 3


def reverse(scores: RedundancyScores, ratio: float, protected=(), **_) -> Plan:
    """Reverse order (Lu et al., "Reassessing Layer Pruning in LLMs", ICLR 2026, arXiv 2411.15558,
    section 3): drop the K deepest unprotected layers. Its healing trains the last three kept
    layers (the paper also trains lm_head, which here is ``--train-lm-head`` on an untied head).

    Scores are not read: the rule is position alone, which the paper finds beats BI, Taylor and
    perplexity metrics on Llama-3 after the same finetuning.
    """
    n, k = scores.num_layers, drop_budget(ratio, scores.num_layers)
    allowed = [i for i in range(n) if i not in protected]
    if len(allowed) < k:
        raise SelectionError(f"only {len(allowed)} of {n} layers are unprotected, fewer than the {k} to drop; lower --ratio or --protect")
    dropped = allowed[-k:]
    kept = [i for i in range(n) if i not in dropped]
    return plan_from_drops("reverse", n, dropped, kept[-REVERSE_HEALED:])


def deepest_block(scores: RedundancyScores, ratio: float, protected=(), **_) -> Plan:
    """Gromov et al.'s simple heuristic (arXiv 2403.17887, section 4.2): drop the K deepest layers
    but keep the final one, which every pruning study finds the costliest to lose. Protected
    layers are skipped, so the dropped layers are the K deepest unprotected ones below the last.
    The "-FT" variant heals the successor of each dropped layer, like the other baselines.
    """
    n, k = scores.num_layers, drop_budget(ratio, scores.num_layers)
    allowed = [i for i in range(n - 1) if i not in protected]
    if len(allowed) < k:
        raise SelectionError(f"only {len(allowed)} layers below the final one are unprotected, fewer than the {k} to drop; lower --ratio or --protect")
    return plan_from_drops("deepest-block", n, allowed[-k:])


def consecutive(scores: RedundancyScores, ratio: float, protected=(), **_) -> Plan:
    """The paper's selection ablation as its authors' code runs it (arXiv 2511.19676: "drop a
    consecutive block and finetune the next block"): the block starts at the single layer with
    the highest S1, drops the K layers from there and finetunes the K after them.

    Starts are limited to those where the block and its K finetuned layers lie inside the model
    and no dropped layer is protected; ties go to the lower index.
    """
    n, k = scores.num_layers, drop_budget(ratio, scores.num_layers)
    s1 = scores.s(1, use_final_state=False)
    starts = [i for i in range(min(len(s1), n - 2 * k + 1)) if not set(range(i, i + k)) & set(protected)]
    if not starts:
        raise SelectionError(f"no block of {k} droppable layers followed by {k} to finetune fits in {n} layers; lower --ratio")
    best = min(starts, key=lambda i: (-s1[i], i))
    return plan_from_drops("consecutive", n, list(range(best, best + k)), list(range(best + k, best + 2 * k)))


def consecutive_sk(scores: RedundancyScores, ratio: float, protected=(), **_) -> Plan:
    """A variant of that ablation: the block of K layers with the highest S_K, finetune the next K."""
    n, k = scores.num_layers, drop_budget(ratio, scores.num_layers)
    sk = scores.s(k, use_final_state=False)
    starts = [i for i in range(min(len(sk), n - 2 * k + 1)) if not set(range(i, i + k)) & set(protected)]
    if not starts:
        raise SelectionError(f"no block of {k} droppable layers followed by {k} to finetune fits in {n} layers; lower --ratio")
    best = min(starts, key=lambda i: (-sk[i], i))
    return plan_from_drops("consecutive-sk", n, list(range(best, best + k)), list(range(best + k, best + 2 * k)))


def random(scores: RedundancyScores, ratio: float, protected=(), seed: int = 0, **_) -> Plan:
    """The paper's ablation: random layers to drop and random survivors to finetune (seeded)."""
    n, k = scores.num_layers, drop_budget(ratio, scores.num_layers)
    rng = np.random.default_rng(seed)
    allowed = [i for i in range(n) if i not in protected]
    if k > len(allowed):
        raise SelectionError(f"random cannot drop {k} of {n} layers with {n - len(allowed)} protected; lower --ratio")
    dropped = sorted(int(i) for i in rng.choice(allowed, size=k, replace=False))
    kept = [i for i in range(n) if i not in dropped]
    finetuned = sorted(int(i) for i in rng.choice(kept, size=min(k, len(kept)), replace=False))
    return plan_from_drops("random", n, dropped, finetuned)
