"""The select -> cut -> heal core that `prune`, `compare` and `sweep` share.

Each step is one function, so the three callers cannot drift apart: ``calibrate`` scores the
layers with every distance the methods need, ``select`` makes a plan (keeping the layers the
architecture and ``--protect`` protect), ``apply_plan`` cuts a model in place (or sparsifies it
through the method's own hook), and ``heal_plan`` heals the plan's survivors with the anchors
mapped to their positions after the cut. ``needs_teacher`` decides once whether healing needs the
dense model beside the pruned one. ``pruned_copy`` does the last steps on a copy, leaving the
dense model untouched as the teacher (compare, sweep, the plan chooser).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from interlace.heal.loop import HealConfig, HealResult
from interlace.methods import Plan, get_method, required_ks, select_layers
from interlace.methods.protect import parse_protect
from interlace.scores import RedundancyScores


def score_ks(methods: Iterable[str], ratios: Iterable[float], num_layers: int) -> tuple[int, ...]:
    """Every s_k window any of ``methods`` needs at any of ``ratios`` (a "-ft" suffix is ignored)."""
    ratios = list(ratios)
    return tuple(sorted({k for m in methods for r in ratios for k in required_ks(m.removesuffix("-ft"), r, num_layers)}))


def calibrate(
    model: Any,
    processor: Any,
    calib: Sequence[dict],
    methods: Iterable[str],
    ratios: Iterable[float],
    num_layers: int,
    **kwargs: Any,
) -> RedundancyScores:
    """Redundancy scores on ``calib`` with the windows ``methods`` need at ``ratios``.

    kwargs go to ``interlace.calibration.compute_scores`` (batch_size, with_answers, progress).
    """
    from interlace.calibration import compute_scores

    return compute_scores(model, processor, list(calib), ks=score_ks(methods, ratios, num_layers), **kwargs)


def protected_layers(arch: Any, protect: str = "") -> tuple[int, ...]:
    """The layers no method may drop: the architecture's (Qwen3-VL DeepStack under "protect") and
    the user's ``--protect`` spec (``interlace.methods.protect``)."""
    return tuple(sorted({*arch.protected, *parse_protect(protect, len(arch.layers))}))


def select(method: str, scores: RedundancyScores, ratio: float, arch: Any, *, model: Any, processor: Any,
           calib: Sequence[dict], seed: int = 0, use_final_state: bool = False, state: Path | None = None,
           protect: str = "", train: Sequence[dict] | None = None, heal_config: HealConfig | None = None) -> Plan:
    """The plan of ``method`` at ``ratio``, never dropping a layer the architecture or ``protect``
    protects. ``state``: a file where a method that runs long (SLEB) saves its progress and
    resumes from it. ``train`` and ``heal_config``: the healing rows and options, which the plan
    chooser (``auto``) spends a share of on its finalists; other methods ignore them."""
    return select_layers(
        method, scores, ratio, protected=protected_layers(arch, protect), use_final_state=use_final_state, seed=seed,
        model=model, processor=processor, calib=list(calib), state=state,
        train=list(train) if train is not None else None, heal_config=heal_config,
    )


def needs_teacher(heal_config: HealConfig) -> bool:
    """Whether healing compares against the dense model (distillation, or the anchor loss)."""
    return heal_config.loss != "ce" or bool(heal_config.anchor_weight)


def apply_plan(model: Any, processor: Any, plan: Plan, calib: Sequence[dict], deepstack: str = "realign") -> dict:
    """Cut ``plan.dropped`` from ``model`` in place, or apply a sparsity method's masks.

    Returns:
        What was done, for the manifest: the surgery record, or ``{"sparsity": ...}``.
    """
    from interlace.surgery import remove_layers

    method = get_method(plan.method)
    if method.apply is not None:
        return {"sparsity": method.apply(model, processor, list(calib))}
    return remove_layers(model, plan.dropped, deepstack=deepstack).to_dict()


def heal_plan(model: Any, processor: Any, plan: Plan, train: Sequence[dict], heal_config: HealConfig, *,
              teacher: Any | None = None, **kwargs: Any) -> HealResult | None:
    """Heal the plan's survivors in the cut ``model``; None when the plan names none.

    ``teacher`` is the dense model before the cut (only read when ``needs_teacher``); its frozen
    anchors are paired with their positions after the cut. kwargs go to ``interlace.heal.loop.heal``
    (checkpoint_dir, resume, progress).
    """
    from interlace.heal.loop import heal

    if not plan.finetuned:
        return None
    anchors = [(plan.kept.index(a), a) for a in plan.anchors]
    return heal(
        model, processor, list(train), plan.finetuned_after_cut, heal_config,
        teacher=teacher if needs_teacher(heal_config) else None, anchor_pairs=anchors, **kwargs,
    )


def pruned_copy(dense: Any, processor: Any, plan: Plan, train: Sequence[dict] | None, heal_config: HealConfig,
                calib: Sequence[dict], deepstack: str = "realign") -> Any:
    """A copy of ``dense`` cut (or sparsified) by ``plan`` and, when ``train`` is given, healed.

    ``dense`` stays untouched and is the teacher, so no second copy is made for distillation.
    """
    model = copy.deepcopy(dense)
    apply_plan(model, processor, plan, calib, deepstack)
    if train:  # a sparsity plan names no survivors, so heal_plan leaves it as it is
        healed = heal_plan(model, processor, plan, train, heal_config, teacher=dense)
        if healed is not None:
            return healed.healed(model)
    return model
