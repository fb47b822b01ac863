"""Does depth matter in the embedded model? Remove 25% of its decoder layers with no healing.

Two choices of layers:
  * the last K layers;
  * the K layers whose input and output hidden states are most similar (highest mean cosine,
    ShortGPT's choice), scored on the calibration split.
Both should cost at least 15% of the overall accuracy (retention <= 0.85) if the model uses its
depth; a model that keeps its accuracy here is too deep for its tasks to tell methods apart.

    python benchmarks/depth_matters.py [--model DIR] [--n-per-task 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

from interlace.calibration import compute_scores
from interlace.data import vqa
from interlace.evaluation.generate import evaluate
from interlace.loading import load_model
from interlace.methods import drop_budget, select_layers
from interlace.surgery import remove_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint directory (default: the embedded model)")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--n-per-task", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, processor = load_model(args.model)
    test = vqa.load_split("test", args.n_per_task)
    dense = evaluate(model, processor, test, description="dense")
    num_layers = len(model.model.language_model.layers)
    k = drop_budget(args.ratio, num_layers)
    scores = compute_scores(model, processor, vqa.load_split("calib", 64))
    choices = {
        "last layers": list(range(num_layers - k, num_layers)),
        "most similar in/out (ShortGPT)": select_layers("shortgpt", scores, args.ratio).dropped,
    }
    report = {"dense": dense.to_json(), "removed": k, "of": num_layers, "variants": {}}
    print(f"dense overall {dense.overall:.3f}  tasks {json.dumps({t: round(v, 3) for t, v in dense.tasks.items()})}")
    for name, dropped in choices.items():
        pruned = copy.deepcopy(model)
        remove_layers(pruned, dropped)
        result = evaluate(pruned, processor, test, description=name)
        retention = result.overall / dense.overall
        report["variants"][name] = {"dropped": dropped, **result.to_json(), "retention": round(retention, 4)}
        verdict = "depth matters" if retention <= 0.85 else "TOO SHALLOW A LOSS (> 0.85)"
        print(f"{name:32s} drop {dropped}: overall {result.overall:.3f}  retention {retention:.3f}  [{verdict}]")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
