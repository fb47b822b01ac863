"""The registry of layer-selection methods: one entry each, with a description and a paper link.

Every method maps redundancy scores (and, for a few, the model itself) to a ``Plan``: which layers
to drop and which survivors to heal. The INTERLACE rules live in ``interlace.select``; the
baselines that share the same scores are here, as small pure functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from interlace.scores import RedundancyScores
from interlace.select import Plan, SelectionError, check_budget, drop_budget, interlace_select


def _all_but_two(num_layers: int) -> int:
    return num_layers - 2


@dataclass(frozen=True)
class Method:
    """Everything a caller needs to know about a method; no caller tests a method's name.

    Attributes:
        name, description, paper: what `interlace methods` lists.
        heals: which survivors the "-FT" variant trains (or, for methods that heal by
            definition, the method itself).
        select: scores, ratio -> Plan (kwargs: protected, use_final_state, seed, model,
            processor, calib).
        ks: the s_k window sizes its scores need at any ratio.
        block_k: it also needs s_K for K = floor(ratio x L), a block of K layers (angular,
            consecutive-sk).
        kind: "layers" removes decoder layers; "sparsity" zeroes weights in place through ``apply``.
        heals_by_definition: its plan names survivors to finetune (INTERLACE and the paper's
            ablations), so it is always healed; training-free baselines heal only as "-FT".
        needs_model: selection runs the model on calibration data (SLEB), or ``apply`` does (Wanda).
        capacity: the most drops its shape fits in L layers (K <= capacity(L)).
        shape: why, for the error when K does not fit.
        apply: for kind "sparsity", (name, model, processor, calib) -> a record of what it did.
        family: "interlace" for the method and its ablations that keep its triplet rule, else
            "baseline" (reports colour them apart).
    """

    name: str
    description: str
    paper: str
    heals: str
    select: Callable[..., Plan]
    ks: tuple[int, ...] = (1, 2, 3)
    block_k: bool = False
    kind: str = "layers"
    heals_by_definition: bool = False
    needs_model: bool = False
    capacity: Callable[[int], int] = _all_but_two
    shape: str = ""
    apply: Callable[..., dict] | None = None
    family: str = "baseline"

    def ks_for(self, ratio: float, num_layers: int) -> tuple[int, ...]:
        """The s_k distances this method needs to select at ``ratio`` in ``num_layers`` layers."""
        ks = set(self.ks)
        if self.block_k:
            ks.add(drop_budget(ratio, num_layers))
        return tuple(sorted(ks))


def _pairs(num_layers: int) -> int:
    return (num_layers - 1) // 2


def _halves(num_layers: int) -> int:
    return num_layers // 2


def _successors(dropped: list[int], num_layers: int) -> list[int]:
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


def _plan(method: str, num_layers: int, dropped: list[int], finetuned: list[int] | None = None, path: str = "") -> Plan:
    dropped = sorted(dropped)
    finetuned = _successors(dropped, num_layers) if finetuned is None else sorted(finetuned)
    return Plan(method=method, num_layers=num_layers, dropped=dropped, finetuned=finetuned, anchors=[], path=path or method)


def _interlace(drop_rule: str, name: str):
    def run(scores: RedundancyScores, ratio: float, protected=(), use_final_state=False, **_) -> Plan:
        s = {k: scores.s(k, use_final_state) for k in (1, 2, 3)}
        k = drop_budget(ratio, scores.num_layers)
        return interlace_select(s[1], s[2], s[3], k, scores.num_layers, tuple(protected), drop_rule, name)

    return run


def _interlace_tn(scores: RedundancyScores, ratio: float, protected=(), use_final_state=False, **_) -> Plan:
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
    return _plan("interlace-tn", n, dropped, finetuned)


def _top_k(values: np.ndarray, k: int, allowed: list[int]) -> list[int]:
    return sorted(sorted(allowed, key=lambda i: (-values[i], i))[:k])


def _shortgpt(scores: RedundancyScores, ratio: float, protected=(), **_) -> Plan:
    """Remove the K layers with the lowest Block Influence, BI = 1 - S1 (all L layers scored)."""
    s1 = scores.s(1, use_final_state=True)
    n = scores.num_layers
    allowed = [i for i in range(n) if i not in protected]
    return _plan("shortgpt", n, _top_k(s1, drop_budget(ratio, n), allowed))


def _angular(scores: RedundancyScores, ratio: float, protected=(), **_) -> Plan:
    """Remove the contiguous block of K layers whose input and output are closest in angle."""
    n, k = scores.num_layers, drop_budget(ratio, scores.num_layers)
    sk = scores.s(k, use_final_state=True)
    distance = np.arccos(np.clip(sk, -1.0, 1.0)) / np.pi
    starts = [i for i in range(n - k + 1) if not set(range(i, i + k)) & set(protected)]
    if not starts:
        raise SelectionError(f"no block of {k} unprotected consecutive layers; lower --ratio")
    best = min(starts, key=lambda i: (distance[i], i))
    return _plan("angular", n, list(range(best, best + k)))


def _consecutive(scores: RedundancyScores, ratio: float, protected=(), **_) -> Plan:
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
    return _plan("consecutive", n, list(range(best, best + k)), list(range(best + k, best + 2 * k)))


def _consecutive_sk(scores: RedundancyScores, ratio: float, protected=(), **_) -> Plan:
    """A variant of that ablation: the block of K layers with the highest S_K, finetune the next K."""
    n, k = scores.num_layers, drop_budget(ratio, scores.num_layers)
    sk = scores.s(k, use_final_state=False)
    starts = [i for i in range(min(len(sk), n - 2 * k + 1)) if not set(range(i, i + k)) & set(protected)]
    if not starts:
        raise SelectionError(f"no block of {k} droppable layers followed by {k} to finetune fits in {n} layers; lower --ratio")
    best = min(starts, key=lambda i: (-sk[i], i))
    return _plan("consecutive-sk", n, list(range(best, best + k)), list(range(best + k, best + 2 * k)))


def _random(scores: RedundancyScores, ratio: float, protected=(), seed: int = 0, **_) -> Plan:
    """The paper's ablation: random layers to drop and random survivors to finetune (seeded)."""
    n, k = scores.num_layers, drop_budget(ratio, scores.num_layers)
    rng = np.random.default_rng(seed)
    allowed = [i for i in range(n) if i not in protected]
    dropped = sorted(int(i) for i in rng.choice(allowed, size=k, replace=False))
    kept = [i for i in range(n) if i not in dropped]
    finetuned = sorted(int(i) for i in rng.choice(kept, size=min(k, len(kept)), replace=False))
    return _plan("random", n, dropped, finetuned)


def _sleb(scores: RedundancyScores, ratio: float, protected=(), model=None, processor=None, calib=None, batch_size: int = 8, **_) -> Plan:
    """Iterative: remove the block whose removal raises calibration loss least, re-score, repeat."""
    from interlace.baselines.sleb import sleb_order
    from interlace.data.chat import collate_groups, encode_for_training, tokenizer_of

    if model is None or processor is None or not calib:
        raise ValueError("sleb needs the model, its processor and calibration samples with answers")
    n = scores.num_layers
    device = next(model.parameters()).device
    # The loss is a sum over tokens, so batching samples of similar length changes only rounding and
    # the padding every trial computes on (a quarter of the tokens of 64 pydocs passages in file order).
    encoded = sorted((encode_for_training(processor, s) for s in calib), key=lambda e: e["input_ids"].shape[1])
    pad_id = tokenizer_of(processor).pad_token_id
    batches = [
        {k: v.to(device) for k, v in batch.items()}
        for start in range(0, len(encoded), batch_size)
        for batch in collate_groups(encoded[start : start + batch_size], pad_id)
    ]
    removed, history = sleb_order(model, batches, drop_budget(ratio, n), tuple(protected))
    plan = _plan("sleb", n, removed)
    plan.log.append(f"removal order {removed}; loss after each removal {[round(h[r], 4) for h, r in zip(history, removed)]}")
    return plan


def _sparsity(name: str):
    def run(scores: RedundancyScores, ratio: float, **_) -> Plan:
        return Plan(method=name, num_layers=scores.num_layers, dropped=[], finetuned=[], anchors=[], path="2:4")

    return run


def apply_sparsity(name: str, model, processor, calib, batch_size: int = 8) -> dict:
    """Zero 2 of every 4 decoder weights in place (magnitude-2:4 or wanda-2:4)."""
    from interlace.baselines.sparsity import apply_nm_sparsity, input_norms
    from interlace.data.chat import batch_inputs

    norms = None
    if name == "wanda-2:4":
        device = next(model.parameters()).device
        batches = [
            {k: v.to(device) for k, v in inputs.items()}
            for i in range(0, len(calib), batch_size)
            for _, inputs in batch_inputs(processor, calib[i : i + batch_size])
        ]
        norms = input_norms(model, batches)
    return apply_nm_sparsity(model, name.split("-")[0], norms)


ARXIV = "https://arxiv.org/abs/"
PAPER = ARXIV + "2511.19676"
PAIRS = "each drop needs a pair of layers (the dropped one and its finetuned survivor)"
BLOCK = "the block of K dropped layers is followed by the K it finetunes"
TRIPLETS = dict(heals_by_definition=True, capacity=_pairs, shape=PAIRS, family="interlace")
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("interlace", "Triplets by S3: drop the more redundant of the first two, finetune the other, freeze the third as anchor.", PAPER, "the survivor of each triplet/pair", _interlace("higher_s1", "interlace"), **TRIPLETS),
        Method("interlace-oa", "INTERLACE ablation: always drop the first layer of each triplet.", PAPER, "the survivor of each triplet", _interlace("first", "interlace-oa"), **TRIPLETS),
        Method("interlace-tn", "INTERLACE ablation: S1 only, drop the most redundant layer, finetune the next, no anchor.", PAPER, "the layer after each dropped one", _interlace_tn, **TRIPLETS),
        Method("shortgpt", "Drop the K layers with the lowest Block Influence (1 - cos(input, output)).", ARXIV + "2403.03853", "the kept layer after each dropped one", _shortgpt),
        Method("angular", "Drop the contiguous block of K layers with the smallest angular distance between its input and output.", ARXIV + "2403.17887", "the kept layer after each dropped one", _angular, block_k=True),
        Method("consecutive", "Paper ablation: drop the K consecutive layers from the one with the highest S1, finetune the next K.", PAPER, "the K layers after the block", _consecutive, heals_by_definition=True, capacity=_halves, shape=BLOCK),
        Method("consecutive-sk", "Variant of that ablation: drop the block of K layers with the highest S_K, finetune the next K.", PAPER, "the K layers after the block", _consecutive_sk, block_k=True, heals_by_definition=True, capacity=_halves, shape=BLOCK),
        Method("random", "Paper ablation: random layers to drop and random survivors to finetune (seeded).", PAPER, "K random kept layers", _random, heals_by_definition=True),
        Method("sleb", "Iteratively remove the block whose removal raises calibration loss least, re-scoring each time.", ARXIV + "2402.09025", "the kept layer after each dropped one", _sleb, needs_model=True),
        Method("magnitude-2:4", "Keep the 2 largest |W| of every 4 input weights of each decoder linear; removes no layers.", ARXIV + "2306.11695", "nothing (masks would densify)", _sparsity("magnitude-2:4"), kind="sparsity", apply=partial(apply_sparsity, "magnitude-2:4")),
        Method("wanda-2:4", "Keep the 2 largest |W| x ||X|| of every 4 input weights of each decoder linear; removes no layers.", ARXIV + "2306.11695", "nothing (masks would densify)", _sparsity("wanda-2:4"), kind="sparsity", needs_model=True, apply=partial(apply_sparsity, "wanda-2:4")),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)} (see `interlace methods`)")
    return METHODS[name]


def required_ks(name: str, ratio: float, num_layers: int) -> tuple[int, ...]:
    """The s_k distances method ``name`` needs at ``ratio`` (``Method.ks_for``)."""
    return get_method(name).ks_for(ratio, num_layers)


def budget_problems(ratio: float, name: str, num_layers: int) -> list[str]:
    """Whether K = floor(ratio x L) drops fit method ``name``'s shape in L layers (no scores needed)."""
    method, drops = get_method(name), drop_budget(ratio, num_layers)
    if drops == 0:
        return [f"--ratio {ratio} removes no layer of {num_layers} (K = floor(ratio x L) = 0); raise --ratio"]
    if num_layers - drops < 2:
        return [f"--ratio {ratio} would leave {num_layers - drops} of {num_layers} layers; keep at least 2 by lowering --ratio"]
    if drops > method.capacity(num_layers):
        return [
            f"--ratio {ratio} asks {name} to drop {drops} of {num_layers} layers, but {method.shape}, "
            f"so at most {method.capacity(num_layers)} fit; lower --ratio"
        ]
    return []


def select_layers(name: str, scores: RedundancyScores, ratio: float, **kwargs) -> Plan:
    """Run a registered method on scores; kwargs: protected, use_final_state, seed, model, processor, calib.

    Raises:
        SelectionError: K = floor(ratio x L) is 0 or leaves fewer than 2 layers, or the method's
            rules cannot place K drops.
    """
    method = get_method(name)
    if method.needs_model and (kwargs.get("model") is None or kwargs.get("processor") is None or not kwargs.get("calib")):
        raise ValueError(f"{name} runs the model: pass model=, processor= and calib= (calibration samples)")
    if method.kind == "layers":
        check_budget(drop_budget(ratio, scores.num_layers), scores.num_layers)
    return method.select(scores, ratio, **kwargs)
