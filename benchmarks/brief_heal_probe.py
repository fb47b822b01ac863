"""The plan chooser's brief heal, applied to candidate plans its screen did not pass on.

``--method auto`` (``interlace.methods.chooser``) heals only the plans of lowest unhealed loss
briefly. This script heals any candidates by label, exactly as the chooser does (the first quarter
of the study's healing rows, the study's options, then the mean loss on the same 32 calibration
passages), so a plan the screen ranked low can be compared with the finalists' recorded losses in
``row-auto.json``. On Gemma 3 270M it showed that the deepest block keeping the final layer, eighth
by the screen, measures lower after the brief heal than the plan ``auto`` chose.

    PYTHONPATH=src .venv/bin/python benchmarks/brief_heal_probe.py --model gemma3-270m \\
        --study docs/study/gemma3-270m --labels angular+protect,shortgpt

Each result is appended to ``<study>/brief-probe.jsonl`` as it ends.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="smollm2, gemma3-270m or a checkpoint directory")
    parser.add_argument("--study", type=Path, required=True, help="a best_plan_study.py directory (its settings and scores)")
    parser.add_argument("--labels", required=True, help="comma list of the chooser's candidate labels, e.g. angular+protect,shortgpt")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from interlace.arch import get_arch
    from interlace.calibration import load_scores
    from interlace.data import sources
    from interlace.heal.loop import HealConfig
    from interlace.loading import load_model
    from interlace.methods.chooser import SCREEN_SAMPLES, brief_count, brief_heal_loss, candidate_plans
    from interlace.methods.sleb import loss_batches
    from interlace.stages import protected_layers

    settings = json.loads((args.study / "settings.json").read_text())
    model, tokenizer = load_model(args.model)
    plans, _ = candidate_plans(load_scores(args.study / "scores.json"), settings["ratio"], protected_layers(get_arch(model)), settings["seed"])
    labels = [label.strip() for label in args.labels.split(",")]
    unknown = [label for label in labels if label not in plans]
    if unknown:
        raise SystemExit(f"--labels: no candidate {', '.join(unknown)}; choose from {', '.join(plans)}")
    calib = sources.load_samples("pydocs", "calib", settings["calib"], seed=settings["seed"])
    train = sources.load_samples("pydocs", "train", settings["train"], seed=settings["seed"])
    heal_config = HealConfig(lr=settings["lr"], batch_size=settings["batch_size"], micro_batch_size=settings["batch_size"], seed=settings["seed"])
    batches = loss_batches(model, tokenizer, list(calib)[:SCREEN_SAMPLES])
    for label in labels:
        started = time.perf_counter()
        plan = plans[label][0]
        loss = brief_heal_loss(model, tokenizer, plan, train, heal_config, calib, batches)  # as the chooser heals a finalist
        record = {"label": label, "dropped": plan.dropped, "finetuned": plan.finetuned, "brief_rows": brief_count(len(train), heal_config.batch_size),
                  "brief_loss": round(loss, 5), "seconds": round(time.perf_counter() - started, 1)}
        print(json.dumps(record), flush=True)
        with (args.study / "brief-probe.jsonl").open("a") as log:
            log.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
