"""Does `interlace bench` measure what the FLOP count predicts?

On a decoder-dominated text model (Qwen3, 12 layers, hidden 768, no image, 256-token prompt), removing
25% of the layers should speed prefill and decode up by almost exactly FLOPs(dense) / FLOPs(pruned).
This script builds the dense model from a config (random weights), saves it, cuts 3 of 12 layers
with ``remove_layers``, saves that, reloads both through ``load_model`` and runs ``benchmark``;
it prints measured speedup vs bound and whether they agree within 3%.

Many short alternating rounds (40 x ~3 s) rather than a few long ones: on a shared CPU the load
drifts within seconds, and the median of per-round ratios only cancels drift slower than a round.
A timing target is a measurement, not a unit test: run this by hand or in a benchmark job (~2 min).

    .venv/bin/python benchmarks/bench_flop_bound.py [--prompt-tokens 256] [--json out.json] [--strict]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # embedded_build: the toy's builder

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from embedded_build import build_tokenizer  # noqa: E402
from interlace.loading import load_model
from interlace.speed.bench import BenchSettings, benchmark
from interlace.surgery import remove_layers

TOLERANCE = 0.03
# Decoder-dominated: 12 layers of 6.3M parameters against a 6.3M-parameter lm_head.
CONFIG = dict(
    vocab_size=8192, hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
    num_key_value_heads=4, head_dim=64, max_position_embeddings=4096, tie_word_embeddings=False,
)
DROP = [1, 5, 9]  # 25% of 12, interleaved (which layers does not matter for speed: they are identical)


def build_checkpoints(root: Path) -> tuple[Path, Path]:
    """Save the dense model and its 25%-cut copy (with a tokenizer, so ``load_model`` reads them)."""
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**CONFIG)).eval()
    tokenizer = build_tokenizer()
    dense, pruned = root / "dense", root / "pruned"
    model.save_pretrained(dense)
    tokenizer.save_pretrained(dense)
    remove_layers(model, DROP)
    model.save_pretrained(pruned)
    tokenizer.save_pretrained(pruned)
    return dense, pruned


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the comparison here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a ratio is off its bound by more than 3%%")
    args = parser.parse_args(argv)

    settings = BenchSettings(prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, repeats=args.repeats,
                             warmup=1, threads=args.threads)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as root:
        dense_dir, pruned_dir = build_checkpoints(Path(root))
        dense, tokenizer = load_model(dense_dir, torch.float32, "cpu")
        pruned, _ = load_model(pruned_dir, torch.float32, "cpu")
        comparison = benchmark(dense, pruned, tokenizer, settings, names=("dense", "pruned"))
    if args.json:
        comparison.save(args.json)

    machine = comparison.machine
    print(f"machine: {machine.get('cpu', machine.get('gpu'))}, {os.cpu_count()} CPUs, load average "
          f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}; {machine['threads']} torch thread(s), "
          f"torch {machine['torch']}")
    print(f"dense {comparison.a.num_layers} layers -> pruned {comparison.b.num_layers}; "
          f"prompt {settings.prompt_tokens} "
          f"tokens, {settings.new_tokens} new, medians of {settings.repeats} alternating runs")
    a, b, ok = comparison.a, comparison.b, True
    rows = [
        ("prefill", "wall", comparison.prefill_speedup, comparison.prefill_flop_bound,
         f"{a.ttft_s * 1e3:.0f} ms", f"{b.ttft_s * 1e3:.0f} ms"),
        ("decode", "wall", comparison.decode_speedup, comparison.decode_flop_bound,
         f"{a.decode_tokens_per_s:.1f} tok/s", f"{b.decode_tokens_per_s:.1f} tok/s"),
    ]
    if comparison.prefill_cpu_speedup:  # CPU device: the same runs in process CPU time (no waiting for a core)
        rows += [
            ("prefill", "CPU", comparison.prefill_cpu_speedup, comparison.prefill_flop_bound,
             f"{a.ttft_cpu_s * 1e3:.0f} ms", f"{b.ttft_cpu_s * 1e3:.0f} ms"),
            ("decode", "CPU", comparison.decode_cpu_speedup, comparison.decode_flop_bound,
             f"{a.decode_cpu_tokens_per_s:.1f} tok/s", f"{b.decode_cpu_tokens_per_s:.1f} tok/s"),
        ]
    for stage, clock, measured, bound, time_a, time_b in rows:
        off = measured / bound - 1
        within = abs(off) <= TOLERANCE
        ok &= within or clock == "CPU"  # the check is on wall-clock latency; CPU time is a diagnostic
        print(f"{stage:8s} {clock:4s} dense {time_a:>12s}  pruned {time_b:>12s}  speedup {measured:.3f}x  "
              f"FLOP bound {bound:.3f}x  off by {off:+.1%}  {'within' if within else 'NOT within'} 3%")
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
