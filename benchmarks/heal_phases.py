"""Where a healing step's time goes: forward, backward and optimizer, survivors vs all layers.

``pipeline_cost.py`` times whole ``heal`` runs and finds survivors-only healing *cheaper* than its
FLOP bound on SmolLM2. This times the phases of the same kind of step (cut model, the plan's
survivors trainable vs every decoder layer trainable, AdamW, summed cross-entropy over the labels)
so the gap can be placed: the bound counts equal forward FLOPs for the two sets, but autograd only
records the graph and keeps activations from the lowest trainable layer up, and AdamW's update
scales with the trainable parameters.

Rounds alternate the two sets; round 0 is a warm-up; ratios are medians of per-round ratios.

    .venv/bin/python benchmarks/heal_phases.py [--model smollm2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from interlace.arch import get_arch
from interlace.calibration import compute_scores
from interlace.data import sources
from interlace.data.chat import training_batches
from interlace.heal.loop import set_trainable
from interlace.heal.losses import ce_sum
from interlace.loading import load_model
from interlace.methods import select_layers
from interlace.speed.flops import heal_step_flops
from interlace.surgery import remove_layers

PHASES = ("forward", "backward", "optimizer")


def timed_step(model, batches, optimizer) -> dict[str, float]:
    """One optimizer step over ``batches`` (gradients accumulated), seconds per phase."""
    seconds = dict.fromkeys(PHASES, 0.0)
    for batch in batches:
        batch = dict(batch)
        targets = batch.pop("labels")[:, 1:]
        start = time.perf_counter()
        logits = model(**batch).logits[:, :-1]
        loss = ce_sum(logits, targets)
        seconds["forward"] += time.perf_counter() - start
        start = time.perf_counter()
        loss.backward()
        seconds["backward"] += time.perf_counter() - start
    start = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    seconds["optimizer"] = time.perf_counter() - start
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", default="pydocs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)

    model, processor = load_model(args.model, device="cpu")
    calib = sources.load_samples(args.data, "calib", 64, seed=0)
    scores = compute_scores(model, processor, calib, (1, 2, 3), 32, progress=False)
    plan = select_layers("interlace", scores, 0.25, protected=get_arch(model).protected)
    remove_layers(model, plan.dropped)
    layers = get_arch(model).layers
    sets = {"survivors": plan.finetuned_after_cut, "all_layers": list(range(len(layers)))}
    batches = training_batches(processor, calib[: args.steps * args.batch_size], args.batch_size)

    rounds, trainable_params = [], {}
    for r in range(args.rounds + 1):
        row = {}
        for name, trainable in (sets.items() if r % 2 == 0 else reversed(sets.items())):
            trainable_params[name] = set_trainable(model, trainable)
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
            steps = [timed_step(model, batches, optimizer) for _ in range(args.steps)]
            row[name] = {phase: sum(s[phase] for s in steps) for phase in PHASES}
        if r:
            rounds.append(row)

    def ratio(f) -> float:
        return statistics.median(f(row["survivors"]) / f(row["all_layers"]) for row in rounds)

    text = model.config.get_text_config(decoder=True)
    shapes = [b["input_ids"].shape for b in batches]
    bound = {name: sum(heal_step_flops(text, [t] * b, trainable) for b, t in shapes) for name, trainable in sets.items()}
    print(f"{args.model}: dropped {plan.dropped}; survivors {sets['survivors']} of {len(layers)} layers; "
          f"{args.steps} steps of {args.batch_size}, {args.rounds} rounds, 1 torch thread")
    for name in sets:
        median = {phase: statistics.median(row[name][phase] for row in rounds) for phase in PHASES}
        print(f"{name:10s} {trainable_params[name] / 1e6:6.1f}M trainable  " + "  ".join(f"{p} {median[p]:.2f}s" for p in PHASES))
    print(f"survivors / all layers: forward {ratio(lambda s: s['forward']):.3f} (FLOP bound 1.000), "
          f"backward {ratio(lambda s: s['backward']):.3f}, optimizer {ratio(lambda s: s['optimizer']):.3f}")
    print(f"forward+backward {ratio(lambda s: s['forward'] + s['backward']):.3f}, whole step {ratio(lambda s: sum(s.values())):.3f}, "
          f"FLOP bound {bound['survivors'] / bound['all_layers']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
