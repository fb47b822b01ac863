"""Which pruned model is best on real weights: every layer method at ratio 0.25, healed with the
same budget, against dense and Dense-FT, plus the plan chooser (``auto``).

One row per method (``<method>`` for those that heal by definition, ``<method>-ft`` for a
training-free baseline given the same healing, ``+protect`` to add LLM-Pruner's fragile-layer
protection, ``auto`` for the chooser, ``angular+protect`` for prune's default). Each row heals on the same pydocs healing passages with
the same options (AdamW, cosine, 3% warmup, batch 8, one epoch: ``--train`` passages make
``--train / 8`` optimizer steps) and is measured on held-out pydocs passages, never seen by
calibration or healing: perplexity over at least ``--min-tokens`` tokens with a 95% bootstrap
interval over passages, and the continuation and cloze tasks.

Resumable: each finished row is one JSON file in ``--out``, written atomically; a rerun skips
the rows there (and refuses a directory made under other settings), SLEB's removal steps are
saved as they finish, and the table is rewritten after every row. Several processes may share
one ``--out`` (each row is locked while it runs; the next process takes the next free row). One
torch thread by default, so the study shares a machine politely:

    nohup nice -n 10 .venv/bin/python benchmarks/best_plan_study.py --model smollm2 \\
        --out docs/study/smollm2 > docs/study/smollm2.log 2>&1 &
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import fcntl
import json
import math
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np
import torch

from interlace.files import write_atomic

# Cheap and informative first, SLEB (an hour of removal trials on SmolLM2) last.
ROWS = (
    "dense", "dense-ft", "angular+protect", "shortgpt-ft", "angular-ft", "reverse-ft", "deepest-block-ft", "interlace",
    "interlace+protect", "interlace-tn", "interlace-oa", "consecutive", "consecutive-sk", "auto", "random", "sleb-ft",
)


def bootstrap_ppl(nll: Sequence[float], tokens: Sequence[int], resamples: int = 2000, level: float = 0.95,
                  seed: int = 0) -> tuple[float, float, float]:
    """Perplexity over passages and its percentile bootstrap interval, passages resampled.

    Args:
        nll: each passage's summed next-token negative log-likelihood (nats).
        tokens: each passage's predicted token count.
        resamples: bootstrap draws.
        level: the interval's coverage.
        seed: the draws' seed.

    Returns:
        (perplexity, low, high): exp(sum nll / sum tokens) of the passages, and the interval's ends.
    """
    return _passage_bootstrap(lambda n, t: np.exp(n.sum(-1) / t.sum(-1)), [nll], tokens, resamples, level, seed)


def paired_ratio(nll_a: Sequence[float], nll_b: Sequence[float], tokens: Sequence[int], resamples: int = 2000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Perplexity of model a over that of model b on the same passages, with a paired percentile
    bootstrap interval: each draw resamples passages once for both models, so what the passages
    share (a hard passage is hard for both) cancels and the interval is that of the difference.

    Returns:
        (ratio, low, high); an interval that holds 1 does not separate the two models.
    """
    return _passage_bootstrap(lambda a, b, t: np.exp((a.sum(-1) - b.sum(-1)) / t.sum(-1)), [nll_a, nll_b], tokens,
                              resamples, level, seed)


def _passage_bootstrap(statistic, nlls: Sequence[Sequence[float]], tokens: Sequence[int], resamples: int, level: float,
                       seed: int) -> tuple[float, float, float]:
    """``statistic(*nlls, tokens)`` over all passages and its percentile bootstrap interval, each
    draw resampling the same passages for every column (the statistic sums over the last axis)."""
    columns = [np.asarray(column, dtype=np.float64) for column in (*nlls, tokens)]
    count = columns[-1]
    if any(c.shape != count.shape for c in columns) or count.ndim != 1 or len(count) < 2 or (count <= 0).any():
        raise ValueError("need two or more passages, each with a positive token count and one nll per model")
    draws = np.random.default_rng(seed).integers(0, len(count), size=(resamples, len(count)))  # (R, N) passage indices
    values = statistic(*(c[draws] for c in columns))  # (R,)
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(statistic(*columns)), float(low), float(high)


def parse_row(row: str) -> tuple[str, bool, bool]:
    """'<method>[-ft][+protect]' -> (method, heal a training-free method, protect the fragile layers);
    a registered name is that method as it stands (``angular+protect``, prune's default)."""
    from interlace.methods import METHODS

    if row in METHODS:
        return row, False, False
    base, protect = row.removesuffix("+protect"), row.endswith("+protect")
    return base.removesuffix("-ft"), base.endswith("-ft"), protect


def row_file(out: Path, row: str) -> Path:
    """Where a finished row is kept, by its whole name: ``interlace@lr1e-3`` never replaces ``interlace``."""
    return out / f"row-{row}.json"


def claim_row(out: Path, row: str) -> IO | None:
    """An exclusive lock on one unfinished row, held while the returned file is open; None when
    another process holds it or the row is finished. Several processes can thus share one study
    directory (one per core), each taking the next row nobody has."""
    handle = (out / f".lock-{row}").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    if row_file(out, row).is_file():  # finished by another process since this one listed its rows
        handle.close()
        return None
    return handle


def parse_variant(row: str) -> tuple[str, dict]:
    """'<row>[@change...]' -> (the row, the changes of a controlled experiment or a seed).

    Changes, each after an '@': ``lr<float>`` (healing learning rate), ``kd`` (distil the dense
    model instead of the next-token loss), ``x<int>`` (that many times the healing passages, same
    batch: that many times the steps), ``seed<int>`` (the healing seed: data order and dropout; the
    plan is the same). ``interlace@lr1e-4@x4`` is INTERLACE healed at lr 1e-4 on four times the data.
    """
    base, *parts = row.split("@")
    changes: dict = {}
    for part in parts:
        if part == "kd":
            changes["loss"] = "kd"
        elif part.startswith("lr"):
            changes["lr"] = float(part[2:])
        elif part.startswith("x") and part[1:].isdigit() and int(part[1:]) >= 1:
            changes["budget"] = int(part[1:])
        elif part.startswith("seed") and part[4:].isdigit():
            changes["seed"] = int(part[4:])
        else:
            raise ValueError(f"row {row!r}: unknown change @{part}; use @lr<float>, @kd, @x<int> or @seed<int>")
    return base, changes


def passage_nll(model, tokenizer, passages: Sequence[dict]) -> tuple[list[float], list[int]]:
    """Each passage's summed next-token NLL and token count (the library's perplexity, one at a time)."""
    from interlace.evaluation.text import perplexity

    nll, tokens = [], []
    for passage in passages:
        ppl, count = perplexity(model, tokenizer, [passage], batch_size=1)
        nll.append(math.log(ppl) * count)
        tokens.append(count)
    return nll, tokens


def held_out(tokenizer, min_tokens: int, items: int, seed: int = 0) -> tuple[list[dict], list, list]:
    """The first test passages that hold ``min_tokens`` predicted tokens, and the task items."""
    from interlace.data.realtext import load_passages
    from interlace.evaluation.text import choice_items, cloze_items

    passages = load_passages("test", None, seed)
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    chosen, total = [], 0
    for passage in passages:
        if total >= min_tokens:
            break
        chosen.append(passage)
        total += len(tok(passage["text"], add_special_tokens=True, truncation=True, max_length=512)["input_ids"]) - 1
    if total < min_tokens:
        raise SystemExit(f"the held-out split has {total} tokens, fewer than --min-tokens {min_tokens}")
    return chosen, cloze_items(passages, items), choice_items(passages, items, seed)


def measure(model, tokenizer, passages, cloze, choice) -> dict:
    """Held-out perplexity with its interval, and the two tasks."""
    from interlace.evaluation.text import choice_predictions, cloze_hits

    model.eval()
    nll, tokens = passage_nll(model, tokenizer, passages)
    ppl, low, high = bootstrap_ppl(nll, tokens)
    hits = cloze_hits(model, tokenizer, cloze)
    picks = choice_predictions(model, tokenizer, choice)
    return {
        "perplexity": ppl, "ci95": [low, high], "tokens": int(sum(tokens)), "passages": len(passages),
        "cloze": float(np.mean(hits)), "continuation": float(np.mean([p == item.answer for p, item in zip(picks, choice)])),
        "items": {"cloze": len(cloze), "continuation": len(choice)}, "passage_nll": nll, "passage_tokens": tokens,
    }


def table(out: Path, settings: dict) -> str:
    """The finished rows as a markdown table, in ``ROWS`` order then any others."""
    rows = {json.loads(p.read_text())["row"]: json.loads(p.read_text()) for p in out.glob("row-*.json")}
    order = [r for r in ROWS if r in rows] + sorted(set(rows) - set(ROWS))
    dense = rows.get("dense", {}).get("perplexity")
    # The best of the study's own rows; a seed or a controlled change ("@") is compared, not a candidate.
    pruned = [name for name in order if name not in ("dense", "dense-ft") and "@" not in name]
    best = min(pruned, key=lambda name: rows[name]["perplexity"]) if pruned else None
    lines = [
        f"{settings['model']}: ratio {settings['ratio']}, healing {settings['train']} pydocs passages "
        f"({settings['steps']} AdamW steps of {settings['batch_size']}, lr {settings['lr']}, cosine, 3% warmup); "
        f"held-out perplexity over >= {settings['min_tokens']} tokens with 95% bootstrap intervals over passages; "
        f"{settings['items']} cloze and continuation items.",
        "",
        f"| row | dropped | healed | perplexity | 95% interval | retention vs dense | / {best} [paired 95%] | continuation | cloze | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in order:
        r = rows[name]
        retention = f"{dense / r['perplexity']:.3f}" if dense else "-"
        versus = "-"
        if best is not None and name != best and r["passage_tokens"] == rows[best]["passage_tokens"]:
            ratio, low, high = paired_ratio(r["passage_nll"], rows[best]["passage_nll"], r["passage_tokens"])
            versus = f"{ratio:.3f} [{low:.3f}-{high:.3f}]"
        lines.append(
            f"| {name} | {r.get('dropped', '-')} | {r.get('finetuned', '-')} | {r['perplexity']:.2f} | "
            f"{r['ci95'][0]:.2f}-{r['ci95'][1]:.2f} | {retention} | {versus} | {r['continuation']:.3f} | {r['cloze']:.3f} | "
            f"{r['seconds']['total']:.0f} |"
        )
    seeds = seed_spread(rows, settings["seed"])
    if seeds:
        lines += ["", f"Healing seeds (same plan and data; seed {settings['seed']} is the row itself):", "",
                  "| row | perplexity by seed | mean | spread (max - min) |", "|---|---|---|---|"]
        lines += [f"| {name} | {', '.join(f'{seed}: {ppl:.2f}' for seed, ppl in by_seed.items())} | "
                  f"{sum(by_seed.values()) / len(by_seed):.2f} | {max(by_seed.values()) - min(by_seed.values()):.2f} |"
                  for name, by_seed in ((name, seeds[name]) for name in order if name in seeds)]
    return "\n".join(lines) + "\n"


def seed_spread(rows: dict[str, dict], study_seed: int) -> dict[str, dict[int, float]]:
    """{row: {seed: perplexity}} for each row run under more than one healing seed and no other
    change: the row itself is ``study_seed``, ``<row>@seed<k>`` seed k."""
    seeds: dict[str, dict[int, float]] = {}
    for name, record in rows.items():
        base, changes = parse_variant(name)
        if set(changes) == {"seed"} and base in rows:
            seeds.setdefault(base, {study_seed: rows[base]["perplexity"]})[changes["seed"]] = record["perplexity"]
    return {name: dict(sorted(by_seed.items())) for name, by_seed in seeds.items()}


def profile_plot(out: Path, path: Path) -> None:
    """The layer profile of every finished row: above, each layer's redundancy on calibration data
    (1 - cosine similarity of its input and output, ShortGPT's Block Influence); below, one line per
    row (best perplexity first) with its dropped (red), healed (green) and frozen (grey) layers and
    its held-out perplexity with the 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((json.loads(p.read_text()) for p in out.glob("row-*.json")), key=lambda r: r["perplexity"])
    scores = json.loads((out / "scores.json").read_text())
    layers = scores["num_layers"]
    influence = [1 - c for c in scores["similarity"]["1"]]
    fig, (top, grid) = plt.subplots(2, 1, figsize=(max(7, 0.3 * layers + 3), 1.6 + 0.32 * len(rows)),
                                    gridspec_kw={"height_ratios": [1.2, max(1, 0.32 * len(rows))]}, sharex=True)
    top.bar(range(layers), influence, color="#4c72b0")
    top.set_yscale("log")
    top.set_ylabel("1 - cos", fontsize=8)
    top.set_title(f"{out.name}: layer profile and the plan of each row (ratio {json.loads((out / 'settings.json').read_text())['ratio']})", fontsize=9)
    for y, row in enumerate(rows):
        dropped, healed = set(row.get("dropped") or []), set(row.get("finetuned") or [])
        if row["row"] == "dense-ft":
            healed = set(range(layers))
        for i in range(layers):
            colour = "#d62728" if i in dropped else "#2ca02c" if i in healed else "#dddddd"
            grid.add_patch(plt.Rectangle((i - 0.45, y - 0.4), 0.9, 0.8, color=colour))
        low, high = row["ci95"]
        grid.text(layers, y, f" {row['perplexity']:.1f} [{low:.1f}-{high:.1f}]", va="center", fontsize=7)
    grid.set_yticks(range(len(rows)), [r["row"] for r in rows], fontsize=7)
    grid.set_ylim(len(rows) - 0.5, -0.5)
    grid.set_xlim(-0.6, layers + 4)
    grid.set_xticks(range(0, layers, 2))
    grid.set_xlabel("decoder layer (red dropped, green healed, grey frozen); held-out perplexity [95% interval]", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="smollm2, gemma3-270m or a checkpoint directory")
    parser.add_argument("--out", type=Path, required=True, help="results directory (one JSON per row)")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma list of rows (default: all, in a cheap-first order)")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--calib", type=int, default=32, help="calibration passages (scores, SLEB, the chooser's screen)")
    parser.add_argument("--train", type=int, default=256, help="healing passages, one epoch")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--min-tokens", type=int, default=20000)
    parser.add_argument("--items", type=int, default=100, help="cloze and continuation items each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="only rewrite table.md and profile.png from the finished rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from interlace.arch import get_arch
    from interlace.calibration import load_scores, save_scores
    from interlace.data import sources
    from interlace.heal.loop import HealConfig, HealInterrupted
    from interlace.loading import load_model
    from interlace.methods import METHODS
    from interlace.methods.protect import fragile_layers
    from interlace.stages import calibrate

    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    try:
        bases = {r: parse_variant(r)[0] for r in rows}
    except ValueError as error:
        raise SystemExit(f"--rows: {error}") from None
    unknown = [r for r, base in bases.items() if base not in ("dense", "dense-ft") and parse_row(base)[0] not in METHODS]
    if unknown:
        raise SystemExit(f"--rows: unknown {', '.join(unknown)}; use dense, dense-ft or <method>[-ft][+protect], then any @changes")
    settings = {
        "model": args.model, "ratio": args.ratio, "calib": args.calib, "train": args.train, "batch_size": args.batch_size,
        "steps": args.train // args.batch_size, "lr": args.lr, "min_tokens": args.min_tokens, "items": args.items, "seed": args.seed,
    }
    out = args.out
    if args.report:
        write_atomic(out / "table.md", table(out, json.loads((out / "settings.json").read_text())))
        profile_plot(out, out / "profile.png")
        return
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "settings.json"
    if saved.is_file() and json.loads(saved.read_text()) != settings:
        raise SystemExit(f"{out} holds rows run under other settings ({saved}); pass those or another --out")
    write_atomic(saved, json.dumps(settings, indent=2))
    todo = [r for r in rows if not row_file(out, r).is_file()]
    print(f"{len(rows) - len(todo)} of {len(rows)} rows done in {out}; to run: {', '.join(todo) or 'none'}", flush=True)
    if not todo:
        write_atomic(out / "table.md", table(out, settings))
        return

    model, tokenizer = load_model(args.model)
    arch = get_arch(model)
    calib = sources.load_samples("pydocs", "calib", args.calib, seed=args.seed)
    train = sources.load_samples("pydocs", "train", args.train, seed=args.seed)
    passages, cloze, choice = held_out(tokenizer, args.min_tokens, args.items, args.seed)
    heal_config = HealConfig(lr=args.lr, batch_size=args.batch_size, micro_batch_size=args.batch_size, seed=args.seed)
    if (out / "scores.json").is_file():
        scores = load_scores(out / "scores.json")
    else:
        layer_methods = [name for name, m in METHODS.items() if m.kind == "layers"]  # rows added later find their windows
        scores = calibrate(model, tokenizer, calib, layer_methods, [args.ratio], len(arch.layers), progress=False)
        save_scores(scores, out / "scores.json")
    fragile = ",".join(str(i) for i in fragile_layers(len(arch.layers)))

    failed = []
    for row in todo:
        claim = claim_row(out, row)
        if claim is None:
            print(f"{row}: finished or running in another process, skipped", flush=True)
            continue
        try:
            run_row(row, out, settings, model, tokenizer, arch, scores, calib, train, heal_config, (passages, cloze, choice), fragile)
        except HealInterrupted:  # SIGTERM or Ctrl-C: the study stops, it does not go on to the next row
            raise SystemExit(f"{row}: interrupted; rerun the same command to go on") from None
        except Exception:  # an unattended study goes on with the other rows; a rerun retries this one
            traceback.print_exc()
            failed.append(row)
        finally:
            claim.close()
    if failed:
        raise SystemExit(f"rows that failed (tracebacks above; rerun to retry them): {', '.join(failed)}")


def run_row(row: str, out: Path, settings: dict, model, tokenizer, arch, scores, calib, train, heal_config, held, fragile: str) -> None:
    """Select, cut, heal and measure one row; write its JSON and the table."""
    from interlace.heal.loop import heal
    from interlace.methods import get_method
    from interlace.stages import pruned_copy, select

    started = time.perf_counter()
    print(f"{row}: started", flush=True)
    record: dict = {"row": row}
    name, (row, changes) = row, parse_variant(row)  # row: the method's row; name: this row (row_file)
    if changes:
        budget = changes.pop("budget", 1)
        if budget > 1:
            from interlace.data import sources

            train = sources.load_samples("pydocs", "train", settings["train"] * budget, seed=settings["seed"])
        heal_config = dataclasses.replace(heal_config, **changes)
        record["changes"] = {**changes, "budget": budget, "steps": len(train) // heal_config.batch_size}
    if row in ("dense", "dense-ft"):
        pruned, selected = model, time.perf_counter()
        if row == "dense-ft":
            pruned = copy.deepcopy(model)
            heal(pruned, tokenizer, train, list(range(len(arch.layers))), heal_config, progress=False)
        healed = time.perf_counter()
    else:
        method, ft, protect = parse_row(row)
        plan = select(method, scores, settings["ratio"], arch, model=model, processor=tokenizer, calib=calib, seed=settings["seed"],
                      state=out / "sleb_state.json", protect=fragile if protect else "", train=train, heal_config=heal_config)
        selected = time.perf_counter()
        heals = ft or get_method(method).heals_by_definition
        pruned = pruned_copy(model, tokenizer, plan, train if heals else None, heal_config, calib)
        healed = time.perf_counter()
        record.update(dropped=plan.dropped, finetuned=plan.finetuned if heals else [], protected=fragile if protect else "")
        if plan.choice:
            record["choice"] = plan.choice
    record.update(measure(pruned, tokenizer, *held))
    done = time.perf_counter()
    record["seconds"] = {"select": round(selected - started, 1), "heal": round(healed - selected, 1),
                         "evaluate": round(done - healed, 1), "total": round(done - started, 1)}
    write_atomic(row_file(out, name), json.dumps(record, indent=1))
    write_atomic(out / "table.md", table(out, settings))
    profile_plot(out, out / "profile.png")
    print(f"{name}: perplexity {record['perplexity']:.2f} [{record['ci95'][0]:.2f}, {record['ci95'][1]:.2f}] "
          f"in {record['seconds']['total']:.0f}s ({record['seconds']})", flush=True)


if __name__ == "__main__":
    main()
