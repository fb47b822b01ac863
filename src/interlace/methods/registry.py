"""The registry of layer-selection methods: one ``Method`` record each, with a description, a paper
link and everything a caller needs to run it; ``select_layers`` is the one way in.

Every method maps redundancy scores (and, for a few, the model itself) to a ``Plan``: which layers
to drop and which survivors to heal. The rules themselves live beside this module: INTERLACE and
its ablations in ``interlace``, the score-only baselines in ``baselines``, SLEB in ``sleb``, 2:4
sparsity in ``sparsity``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial

from interlace.methods import baselines
from interlace.methods.chooser import choose
from interlace.methods.interlace import interlace_select, interlace_tn
from interlace.methods.plan import Plan, check_budget, drop_budget
from interlace.methods.protect import fragile_layers
from interlace.methods.sleb import sleb
from interlace.methods.sparsity import apply_sparsity, sparsity_plan
from interlace.scores import RedundancyScores
from interlace.typecheck import expect


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
            processor, calib, state: a file where a long-running method saves its progress).
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
        family: "interlace" for the method and its ablations that keep its triplet rule,
            "chooser" for ``auto``, else "baseline" (reports colour them apart).
        needs_train: selection heals candidate plans briefly (``auto``): it needs the healing
            rows (``train``) and options (``heal_config``) as well as the model.
        keeps_fragile: its rule protects the fragile layers itself (``angular+protect``); the
            chooser, which measures every method with and without that protection, skips it.
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
    needs_train: bool = False
    keeps_fragile: bool = False

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


def _unfragile(num_layers: int) -> int:
    return num_layers - len(fragile_layers(num_layers))


def _interlace(drop_rule: str, name: str):
    def run(scores: RedundancyScores, ratio: float, protected=(), use_final_state=False, **_) -> Plan:
        s = {k: scores.s(k, use_final_state) for k in (1, 2, 3)}
        k = drop_budget(ratio, scores.num_layers)
        return interlace_select(s[1], s[2], s[3], k, scores.num_layers, tuple(protected), drop_rule, name)

    return run


ARXIV = "https://arxiv.org/abs/"
# NVIDIA Model-Optimizer ranks candidate pruned architectures by a short distillation of the top
# few, as one-shot scores rank them poorly after healing; ``auto`` does the same with plans.
MODELOPT = "https://github.com/NVIDIA/TensorRT-Model-Optimizer"
PAPER = ARXIV + "2511.19676"
PAIRS = "each drop needs a pair of layers (the dropped one and its finetuned survivor)"
BLOCK = "the block of K dropped layers is followed by the K it finetunes"
TRIPLETS = dict(heals_by_definition=True, capacity=_pairs, shape=PAIRS, family="interlace")
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("interlace", "Triplets by S3: drop the more redundant of the first two, finetune the other, freeze the third as anchor.", PAPER, "the survivor of each triplet/pair", _interlace("higher_s1", "interlace"), **TRIPLETS),
        Method("interlace-oa", "INTERLACE ablation: always drop the first layer of each triplet.", PAPER, "the survivor of each triplet", _interlace("first", "interlace-oa"), **TRIPLETS),
        Method("interlace-tn", "INTERLACE ablation: S1 only, drop the most redundant layer, finetune the next, no anchor.", PAPER, "the layer after each dropped one", interlace_tn, **TRIPLETS),
        Method("shortgpt", "Drop the K layers with the lowest Block Influence (1 - cos(input, output)).", ARXIV + "2403.03853", "the kept layer after each dropped one", baselines.shortgpt),
        Method("angular", "Drop the contiguous block of K layers with the smallest angular distance between its input and output.", ARXIV + "2403.17887", "the kept layer after each dropped one", baselines.angular, block_k=True),
        Method("angular+protect", "prune's default: angular's block, searched away from the fragile first and last layers (LLM-Pruner keeps four and two), then healed.", ARXIV + "2403.17887", "the kept layer after each dropped one", baselines.angular_protected, block_k=True, heals_by_definition=True, capacity=_unfragile, shape="it keeps the fragile first and last layers", keeps_fragile=True),
        Method("reverse", "Drop the K deepest layers (reverse order); its -FT heals the last three kept layers.", ARXIV + "2411.15558", "the last three kept layers (lm_head too with --train-lm-head)", baselines.reverse),
        Method("deepest-block", "Drop the K layers just below the final layer, which is kept.", ARXIV + "2403.17887", "the kept layer after each dropped one", baselines.deepest_block),
        Method("consecutive", "Paper ablation: drop the K consecutive layers from the one with the highest S1, finetune the next K.", PAPER, "the K layers after the block", baselines.consecutive, heals_by_definition=True, capacity=_halves, shape=BLOCK),
        Method("consecutive-sk", "Variant of that ablation: drop the block of K layers with the highest S_K, finetune the next K.", PAPER, "the K layers after the block", baselines.consecutive_sk, block_k=True, heals_by_definition=True, capacity=_halves, shape=BLOCK),
        Method("random", "Paper ablation: random layers to drop and random survivors to finetune (seeded).", PAPER, "K random kept layers", baselines.random, heals_by_definition=True),
        Method("sleb", "Iteratively remove the block whose removal raises calibration loss least, re-scoring each time.", ARXIV + "2402.09025", "the kept layer after each dropped one", sleb, needs_model=True),
        Method("auto", "Plan chooser: every layer method's plan (plain and protected) screened by calibration loss, the best few and the default's plan healed briefly, the best on held-aside loss kept.", MODELOPT, "the chosen candidate's survivors", choose, needs_model=True, needs_train=True, heals_by_definition=True, block_k=True, family="chooser"),
        Method("magnitude-2:4", "Keep the 2 largest |W| of every 4 input weights of each decoder linear; removes no layers.", ARXIV + "2306.11695", "nothing (masks would densify)", sparsity_plan("magnitude-2:4"), kind="sparsity", apply=partial(apply_sparsity, "magnitude-2:4")),
        Method("wanda-2:4", "Keep the 2 largest |W| x ||X|| of every 4 input weights of each decoder linear; removes no layers.", ARXIV + "2306.11695", "nothing (masks would densify)", sparsity_plan("wanda-2:4"), kind="sparsity", needs_model=True, apply=partial(apply_sparsity, "wanda-2:4")),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)} (see `interlace methods`)")
    return METHODS[name]


def required_ks(name: str, ratio: float, num_layers: int) -> tuple[int, ...]:
    """The s_k distances method ``name`` needs at ``ratio`` (``Method.ks_for``)."""
    return get_method(name).ks_for(ratio, num_layers)


def budget_problems(ratio: float, name: str, num_layers: int, protected: Collection[int] = ()) -> list[str]:
    """Whether K = floor(ratio x L) drops fit method ``name``'s shape in L layers beside the
    ``protected`` ones (no scores needed; a rule may still fail to place them, e.g. a block)."""
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
    free = num_layers - len(set(protected))
    if method.kind == "layers" and drops > free:
        return [
            f"--ratio {ratio} asks {name} to drop {drops} of {num_layers} layers, but --protect leaves only {free} "
            f"unprotected; lower --ratio or protect fewer layers"
        ]
    return []


def select_layers(name: str, scores: RedundancyScores, ratio: float, **kwargs) -> Plan:
    """Run a registered method on scores; kwargs: protected, use_final_state, seed, model, processor,
    calib, state, and for ``auto`` train and heal_config (no train: nothing is healed, and the
    plan of lowest unhealed calibration loss is kept).

    Raises:
        SelectionError: K = floor(ratio x L) is 0 or leaves fewer than 2 layers, or the method's
            rules cannot place K drops.
        TypeError: name, scores or ratio of the wrong type.
    """
    expect(name, str, "name", "a method name such as 'interlace' (see METHODS)")
    expect(scores, RedundancyScores, "scores", "RedundancyScores (from compute_scores or load_scores)")
    expect(ratio, (int, float), "ratio", "a number between 0 and 1")
    method = get_method(name)
    if method.needs_model and (kwargs.get("model") is None or kwargs.get("processor") is None or not kwargs.get("calib")):
        raise ValueError(f"{name} runs the model: pass model=, processor= and calib= (calibration samples)")
    if method.needs_train and kwargs.get("train") and kwargs.get("heal_config") is None:
        raise ValueError(f"{name} heals candidate plans briefly: pass heal_config= with train= (without train=, the plan of lowest unhealed loss is kept)")
    if method.kind == "layers":
        check_budget(drop_budget(ratio, scores.num_layers), scores.num_layers)
    return method.select(scores, ratio, **kwargs)
