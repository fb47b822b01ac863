"""The plan chooser, ``--method auto``: no guess about which selection rule suits a model.

One-shot redundancy scores rank candidate plans poorly once they are healed (on SmolLM2 the
triplet rule's plan is among the costliest before healing and after it; on Gemma 3 270M the order
of the baselines differs again), so the chooser measures instead, as NVIDIA Model-Optimizer does
for candidate architectures (a short distillation of the top few):

1. **Candidates.** The plan of every layer method that selects from scores alone (SLEB, itself a
   search over the same measure, would cost L x K trials), each plain and with the fragile layers
   protected (``protect.fragile_layers``); the user's and the architecture's protection always
   apply. Identical plans are measured once; the manifest lists every name that gave them.
2. **Screen.** The mean token loss of each cut model, without healing, on ``SCREEN_SAMPLES``
   calibration rows (one SLEB trial per plan).
3. **Brief heal.** The ``FINALISTS`` lowest, and the plan of prune's default (``DEFAULT_METHOD``)
   wherever it screened, are healed, each on the first ``BRIEF_SHARE`` of the healing rows with
   the run's own options, and measured again on the same calibration rows, which healing never
   reads (the held-out test split is never touched). The default is always a finalist because the
   unhealed loss does not foresee which plan heals best: on Gemma 3 270M the deepest block that
   keeps the final layer screened eighth of 14 (6.130 against ShortGPT's 5.316), yet after the
   same brief heal it measured 4.073 against 4.199, and after the full heal it was the best plan
   of the study (docs/benchmarks.md). So ``auto`` never loses the default's plan to the screen.
4. **Choice.** The lowest loss after the brief heal wins; the caller heals it in full.

The extra cost is the screening forwards plus one ``BRIEF_SHARE`` of a full heal per finalist; it
is logged and kept in ``Plan.choice`` with every candidate's measures.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from interlace.methods.plan import Plan, SelectionError, drop_budget
from interlace.methods.protect import fragile_layers
from interlace.scores import RedundancyScores

SCREEN_SAMPLES = 32  # calibration rows per loss measure (SLEB's papers use 128 of 2048 tokens)
FINALISTS = 3
BRIEF_SHARE = 0.25  # of the healing rows, per finalist


@dataclass
class Candidate:
    """One distinct plan and its measures (losses are mean token cross-entropy, nats)."""

    label: str  # the first method (and protection) that gave this plan, e.g. "shortgpt+protect"
    dropped: list[int]
    finetuned: list[int]
    protected: list[int]
    also: list[str] = field(default_factory=list)  # other methods that gave the same plan
    screen_loss: float | None = None
    brief_loss: float | None = None


def shortlist(losses: Mapping[str, float], count: int) -> list[str]:
    """The ``count`` labels of lowest loss, ties to the earlier label (a pure function)."""
    order = list(losses)
    return sorted(order, key=lambda label: (losses[label], order.index(label)))[:count]


def brief_count(train_rows: int, batch_size: int, share: float = BRIEF_SHARE) -> int:
    """Healing rows per finalist: ``share`` of the budget, at least one optimizer step's worth."""
    return min(train_rows, max(batch_size, round(share * train_rows)))


def candidate_plans(scores: RedundancyScores, ratio: float, protected: Sequence[int], seed: int = 0,
                    use_final_state: bool = False) -> tuple[dict[str, tuple[Plan, tuple[int, ...]]], dict[str, str]]:
    """The distinct plans of every score-only layer method, plain and with the fragile layers protected.

    Returns:
        ({label: (plan, the layers it protected)} in registry order, labels "<method>" and
        "<method>+protect"; {label: why it has no plan} for the methods whose rules cannot place
        K drops beside the protected layers).
    """
    from interlace.methods.registry import METHODS

    n = scores.num_layers
    variants = {"": tuple(sorted(set(protected)))}
    guarded = tuple(sorted({*protected, *fragile_layers(n)}))
    if guarded != variants[""]:
        variants["+protect"] = guarded
    plans: dict[str, tuple[Plan, tuple[int, ...]]] = {}
    skipped: dict[str, str] = {}
    for method in METHODS.values():
        if not _selects_from_scores(method) or method.keeps_fragile:  # its plan is a "+protect" variant's
            continue
        for suffix, layers in variants.items():
            label = method.name + suffix
            try:
                plan = method.select(scores, ratio, protected=layers, seed=seed, use_final_state=use_final_state)
            except SelectionError as error:
                skipped[label] = str(error)
                continue
            plans[label] = (plan, layers)
    return plans, skipped


def brief_heal_loss(model, processor, plan: Plan, train, heal_config, calib, batches) -> float:
    """Step 3 for one plan: a copy of ``model`` cut by ``plan``, healed on the first
    ``brief_count`` healing rows with the run's options (no checkpoints: a brief heal is redone,
    not resumed), and its mean loss on ``batches`` (``sleb.loss_batches`` of the calibration rows)."""
    from interlace.methods.sleb import mean_loss
    from interlace.stages import pruned_copy

    rows = brief_count(len(train), heal_config.batch_size)
    healed = pruned_copy(model, processor, plan, list(train)[:rows], dataclasses.replace(heal_config, save_every=0), calib)
    return mean_loss(healed, batches)


def _selects_from_scores(method) -> bool:
    """A layer method whose plan follows from the redundancy scores alone (no model run: not SLEB)."""
    return method.kind == "layers" and not method.needs_model


def _default_plan(method, scores: RedundancyScores, ratio: float, protected, seed: int, use_final_state: bool) -> Plan | None:
    """The plan prune's default method gives here; None where it needs the model or cannot place
    the drops (no plan of its to keep among the finalists)."""
    if not _selects_from_scores(method):
        return None
    try:
        return method.select(scores, ratio, protected=tuple(protected), seed=seed, use_final_state=use_final_state)
    except SelectionError:
        return None


def choose(scores: RedundancyScores, ratio: float, protected=(), model=None, processor=None, calib=None, train=None,
           heal_config=None, seed: int = 0, use_final_state: bool = False, progress: bool = True, **_) -> Plan:
    """The candidate plan with the lowest calibration loss after a brief heal (module docstring).

    Returns:
        The chosen plan, renamed "auto", with ``choice`` holding every candidate and the cost.

    Raises:
        SelectionError: no layer method can place K drops beside the protected layers.
    """
    from interlace.config.options import DEFAULT_METHOD
    from interlace.methods.registry import METHODS
    from interlace.methods.sleb import loss_batches, mean_loss

    def say(line: str) -> None:  # each measure as it ends; the plan keeps them in ``choice``
        if progress:
            print(f"  auto: {line}", flush=True)

    started = time.perf_counter()
    plans, skipped = candidate_plans(scores, ratio, protected, seed, use_final_state)
    candidates: dict[tuple, Candidate] = {}
    for label, (plan, layers) in plans.items():
        key = (tuple(plan.dropped), tuple(plan.finetuned))
        if key in candidates:
            candidates[key].also.append(label)
        else:
            candidates[key] = Candidate(label, plan.dropped, plan.finetuned, list(layers))
    default = _default_plan(METHODS[DEFAULT_METHOD], scores, ratio, protected, seed, use_final_state)
    default_key = (tuple(default.dropped), tuple(default.finetuned)) if default is not None else None
    default_label = candidates[default_key].label if default_key in candidates else None  # angular+protect: angular's "+protect" variant
    if not candidates:
        raise SelectionError(f"no layer method can drop {drop_budget(ratio, scores.num_layers)} layers beside the protected ones; lower --ratio or --protect")
    by_label = {c.label: c for c in candidates.values()}
    batches = loss_batches(model, processor, list(calib)[:SCREEN_SAMPLES])
    say(f"{len(plans)} plans, {len(by_label)} distinct; screening each on {min(len(calib), SCREEN_SAMPLES)} calibration rows")
    dense_loss = mean_loss(model, batches)
    if not math.isfinite(dense_loss):
        from interlace.heal.loop import NonFiniteLossError

        raise NonFiniteLossError.in_dense_model(f"calibration loss is {dense_loss}")
    for candidate in by_label.values():
        candidate.screen_loss = round(mean_loss(model, batches, candidate.dropped), 5)
        say(f"screen {candidate.label}: drop {candidate.dropped}, loss {candidate.screen_loss:.4f}")
        if not math.isfinite(candidate.screen_loss):
            candidate.screen_loss = None  # a cut whose loss overflows is no candidate: it ranks last
    screened = time.perf_counter()

    # Without healing data (prune --no-heal) the plan stays unhealed, so the unhealed loss decides.
    screened_losses = {c.label: math.inf if c.screen_loss is None else c.screen_loss for c in by_label.values()}
    finalists = shortlist(screened_losses, FINALISTS if train else 1)
    if train and default_label is not None and default_label not in finalists and screened_losses[default_label] < math.inf:
        finalists.append(default_label)  # the module docstring, step 3
    rows = brief_count(len(train), heal_config.batch_size) if train else 0
    for label in finalists if train else ():
        by_label[label].brief_loss = round(brief_heal_loss(model, processor, plans[label][0], train, heal_config, calib, batches), 5)
        say(f"brief heal {label} on {rows} rows: loss {by_label[label].brief_loss:.4f}")
    best = shortlist({label: by_label[label].brief_loss for label in finalists}, 1)[0] if train else finalists[0]
    finished = time.perf_counter()

    chosen = copy.deepcopy(plans[best][0])
    cost = {
        "screen_seconds": round(screened - started, 1),
        "brief_heal_seconds": round(finished - screened, 1),
        "brief_rows": rows,
        "train_rows": len(train or ()),
        "extra_heal_share": round(len(finalists) * rows / max(1, len(train or ())), 3),
    }
    finals = (f"finalists {', '.join(f'{label} ({by_label[label].screen_loss:.4f} -> {by_label[label].brief_loss:.4f})' for label in finalists)}"
              if train else "no healing data (--no-heal): the lowest unhealed loss wins")
    summary = [
        f"auto: {len(by_label)} distinct plans screened on {min(len(calib), SCREEN_SAMPLES)} calibration rows; {finals}",
        f"auto: chose {best}; extra cost {cost['screen_seconds']}s screening + {cost['brief_heal_seconds']}s brief healing "
        f"({cost['extra_heal_share']}x the full heal's rows)",
    ]
    chosen.choice = {
        "chosen": best,
        "screen_samples": min(len(calib), SCREEN_SAMPLES),
        "finalists": finalists,
        "brief_share": BRIEF_SHARE,
        "cost": cost,
        "candidates": [asdict(c) for c in by_label.values()],
        "skipped": skipped,
    }
    chosen.method, chosen.path, chosen.log = "auto", f"auto: {best}", [*chosen.log, *summary]
    return chosen
