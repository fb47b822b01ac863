"""Distillation vs cross-entropy healing on the embedded suite.

For each ratio and healing loss, several seeds (each seed changes the healing data drawn from the
training stream and its order), same data budget; prints retention mean +- spread as markdown.

    python benchmarks/heal_loss_table.py --ratios 0.25,0.35 --losses ce,kd --seeds 0,1,2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from interlace.config import EMBEDDED_HEAL, PruneConfig
from interlace.data.vqa import load_split
from interlace.evaluation.generate import evaluate
from interlace.heal.loop import HealConfig
from interlace.methods import drop_budget
from interlace.stages import pruned_copy
from interlace.sweep import Session, ratio_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratios", default="0.25,0.35")
    parser.add_argument("--losses", default="ce,kd")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train-samples", type=int, default=2048)
    parser.add_argument("--n-per-task", type=int, default=300)
    parser.add_argument("--use-final-state", action="store_true", help="let pairs use the last layer (needed for 4+ of 12)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    test = load_split("test", args.n_per_task)
    rows: dict[tuple[float, str], list[float]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        session = Session(PruneConfig(data="embedded", seed=seed, calib_samples=384, train_samples=args.train_samples), log=print)
        dense = evaluate(session.model, session.processor, test, progress=False).overall
        for ratio in (float(r) for r in args.ratios.split(",")):
            from interlace.methods import select_layers

            k = drop_budget(ratio, session.num_layers)
            plan = select_layers("interlace", session.scores, ratio_for(k, session.num_layers), use_final_state=args.use_final_state)
            for loss in args.losses.split(","):
                config = HealConfig(**EMBEDDED_HEAL, seed=seed, loss=loss)
                pruned = pruned_copy(session.model, session.processor, plan, session.train, config, session.calib)
                retention = evaluate(pruned, session.processor, test, progress=False).overall / dense
                rows.setdefault((ratio, loss), []).append(retention)
                print(f"seed {seed} ratio {ratio} ({k} layers, drop {plan.dropped}) loss {loss}: retention {retention:.4f}", flush=True)
    print("\n| ratio | loss | retention mean | spread (min-max) | seeds |\n|---|---|---|---|---|")
    for (ratio, loss), values in sorted(rows.items()):
        print(f"| {ratio} | {loss} | {statistics.mean(values):.4f} | {min(values):.4f}-{max(values):.4f} | {len(values)} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([{"ratio": r, "loss": loss, "retentions": v} for (r, loss), v in sorted(rows.items())], handle, indent=2)


if __name__ == "__main__":
    main()
