"""Train the embedded tiny VLM from scratch on the generated visual-QA suite (CPU, reproducible).

    python scripts/train_embedded.py --out src/interlace/embedded/model

Two stages (docs/embedded.md describes the recipe):
1. the CLIP vision tower alone learns per-cell labels (colour, shape, digit value), so vision is
   solved before the decoder starts;
2. the projector and the Qwen3 decoder learn the questions (vision frozen), loss on answer tokens.

Training data is a fixed pool drawn from the suite's training stream (disjoint from calib/test),
with the training-only questions of embedded_tasks.py beside this script on request (--primers),
cached under --cache so a second run skips generation. Step counts are fixed so that a run is
reproducible whatever the machine's speed.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import LlavaForConditionalGeneration

import embedded_tasks  # beside this script; registers the training-only questions into vqa
from embedded_build import CHAT_TEMPLATE, build_config, build_processor
from embedded_tasks import COT_STEPS, PRIMER_TASKS
from interlace.data import chat, vqa
from interlace.surgery import renumber_layers

COLOUR_INDEX = {c: i + 1 for i, c in enumerate(vqa.COLOURS)}  # 0 empty, 5 digit (white)
SHAPE_INDEX = {s: i + 1 for i, s in enumerate(vqa.SHAPES)}  # 0 empty, 5 digit

# The shipped template, except that a user turn's text comes before its images, so in a causal
# decoder the image tokens can attend to the question (--question-first).
QUESTION_FIRST_TEMPLATE = CHAT_TEMPLATE.replace(
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> "
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}",
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }} {% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image> {% endif %}{% endfor %}",
)
assert QUESTION_FIRST_TEMPLATE != CHAT_TEMPLATE


def cell_labels(scene: vqa.Scene) -> np.ndarray:
    """(16, 5) int labels per cell: colour, shape, digit value (-100 when no digit), row, column.

    Row and column make every image token carry its own grid position, so the decoder can find
    "the cell right of X" by matching positions instead of inferring them from token order.
    """
    labels = np.zeros((len(scene), 5), dtype=np.int64)
    labels[:, 2] = -100
    labels[:, 3], labels[:, 4] = np.divmod(np.arange(len(scene)), vqa.GRID)
    for i, obj in enumerate(scene):
        if obj is None:
            continue
        if obj[0] == "shape":
            labels[i, :3] = (COLOUR_INDEX[obj[1]], SHAPE_INDEX[obj[2]], -100)
        else:
            labels[i, :3] = (5, 5, obj[1])
    return labels


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> the processor's normalisation (mean 0.5, std 0.5), (N, 3, H, W)."""
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5


def encode(processor, samples: list[dict]) -> tuple[np.ndarray, torch.Tensor, list[int]]:
    """uint8 images, left-padded int16 token ids of the whole chat, and each prompt's length."""
    full = [processor.apply_chat_template(chat.to_messages(s)) for s in samples]
    encoded = processor(text=full, images=[s["images"] for s in samples], return_tensors="pt", padding="max_length", max_length=48)
    raw = np.stack([np.asarray(s["images"][0]) for s in samples])
    assert torch.allclose(to_pixels(raw), encoded["pixel_values"], atol=1e-5), "pixel normalisation drifted"
    prompts = processor.tokenizer([chat.prompt_text(processor, s) for s in samples])["input_ids"]
    n_image = vqa.GRID * vqa.GRID  # one image token per grid cell (see build_config)
    lens = [len(p) + n_image - 1 for p in prompts]  # <image> expands to n_image tokens
    return raw, encoded["input_ids"].to(torch.int16), lens


def build_pool(processor, n: int, cache: Path, seed: int, tasks: tuple[str, ...], thin: float = 1.0) -> dict[str, torch.Tensor]:
    # The pool holds token ids, so a new chat template or vocabulary rebuilds it like a suite change.
    vocab = json.dumps(sorted(processor.tokenizer.get_vocab().items()))
    digest = hashlib.sha1((processor.chat_template + vocab + ",".join(tasks)).encode()).hexdigest()[:8]
    sparse = f"_thin{thin:g}" if thin != 1 else ""
    path = cache / f"pool_v{vqa.SUITE_VERSION}_{digest}_seed{seed}_n{n}{sparse}.pt"
    if path.exists():
        return torch.load(path)
    cache.mkdir(parents=True, exist_ok=True)
    stream = vqa.train_items(seed, tasks, embedded_tasks.thinned(thin))
    images, cells, input_ids, prompt_lens = [], [], [], []
    t0 = time.time()
    for start in range(0, n, 2000):
        items = [next(stream) for _ in range(min(2000, n - start))]
        raw, ids, lens = encode(processor, [vqa.to_sample(item) for item in items])
        images.append(raw)
        cells.append(np.stack([cell_labels(item.scene) for item in items]))
        input_ids.append(ids)
        prompt_lens += lens
        print(f"  pool {start + len(items)}/{n} ({time.time() - t0:.0f}s)", flush=True)
    pool = {
        "images": torch.from_numpy(np.concatenate(images)),
        "cells": torch.from_numpy(np.concatenate(cells)),
        "input_ids": torch.cat(input_ids),
        "prompt_lens": torch.tensor(prompt_lens),
        "tasks": torch.tensor([i % len(tasks) for i in range(n)]),  # index into `tasks`
    }
    torch.save(pool, path)
    return pool


def lm_batch(pool, idx: torch.Tensor, pad_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    input_ids = pool["input_ids"][idx].long()
    keep = int((input_ids != pad_id).sum(1).max())
    input_ids = input_ids[:, -keep:]  # left padded: drop columns that are padding in every row
    attention = (input_ids != pad_id).long()
    # left padding: positions from the right; labels are everything after the prompt
    lengths = attention.sum(1)
    start = input_ids.shape[1] - lengths + pool["prompt_lens"][idx]
    positions = torch.arange(input_ids.shape[1])[None]
    labels = torch.where(positions >= start[:, None], input_ids, torch.full_like(input_ids, -100))
    batch = {"input_ids": input_ids, "attention_mask": attention, "pixel_values": to_pixels(pool["images"][idx].numpy()), "labels": labels}
    return {key: value.to(device) for key, value in batch.items()}


def cosine(step: int, total: int, warmup: int, floor: float = 0.05) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def run_steps(total: int, step_fn, warmup: int, optimizer, base_lrs, log_every=50, eval_fn=None, eval_every=0):
    """Run step_fn(step) for a fixed number of steps under a cosine schedule with warmup."""
    t0 = time.time()
    for step in range(total):
        factor = cosine(step, total, warmup)
        for group, lr in zip(optimizer.param_groups, base_lrs):
            group["lr"] = lr * factor
        loss = step_fn(step)
        if step % log_every == 0:
            print(f"  step {step}/{total} loss {loss:.4f} ({time.time() - t0:.0f}s)", flush=True)
        if eval_fn and eval_every and step and step % eval_every == 0:
            eval_fn(step)


def train_vision(model, pool, steps: int, batch: int, lr: float, seed: int) -> torch.nn.Module:
    tower = model.model.vision_tower
    hidden = tower.config.hidden_size
    device = model.device
    head = torch.nn.Linear(hidden, 6 + 6 + 10 + 2 * vqa.GRID).to(device)
    params = list(tower.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    n = len(pool["images"])

    def logits_for(idx):
        feats = tower(to_pixels(pool["images"][idx].numpy()).to(device), output_hidden_states=True).hidden_states[-1][:, 1:]
        return head(feats)  # (B, 16, 22)

    def step_fn(step):
        idx = torch.randint(0, n, (batch,), generator=gen)
        out = logits_for(idx)
        y = pool["cells"][idx].to(device)
        loss = F.cross_entropy(out[..., :6].flatten(0, 1), y[..., 0].flatten())
        loss = loss + F.cross_entropy(out[..., 6:12].flatten(0, 1), y[..., 1].flatten())
        loss = loss + F.cross_entropy(out[..., 12:22].flatten(0, 1), y[..., 2].flatten(), ignore_index=-100)
        loss = loss + F.cross_entropy(out[..., 22 : 22 + vqa.GRID].flatten(0, 1), y[..., 3].flatten())
        loss = loss + F.cross_entropy(out[..., 22 + vqa.GRID :].flatten(0, 1), y[..., 4].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    run_steps(steps, step_fn, 50, optimizer, [lr])
    return head


@torch.no_grad()
def vision_accuracy(model, head, processor, seed: int) -> dict[str, float]:
    """Per-cell accuracy of the pretrained tower on held-out test scenes (test digit pool)."""
    items = [vqa.make_item(t, "test", i, seed) for t in vqa.TASKS for i in range(100)]
    raw = np.stack([np.asarray(vqa.render(it.scene)) for it in items])
    y = torch.from_numpy(np.stack([cell_labels(it.scene) for it in items])).to(model.device)
    feats = model.model.vision_tower(to_pixels(raw).to(model.device), output_hidden_states=True).hidden_states[-1][:, 1:]
    out = head(feats)
    colour = (out[..., :6].argmax(-1) == y[..., 0]).float().mean().item()
    shape = (out[..., 6:12].argmax(-1) == y[..., 1]).float().mean().item()
    has_digit = y[..., 2] >= 0
    digit = (out[..., 12:22].argmax(-1)[has_digit] == y[..., 2][has_digit]).float().mean().item()
    row = (out[..., 22 : 22 + vqa.GRID].argmax(-1) == y[..., 3]).float().mean().item()
    col = (out[..., 22 + vqa.GRID :].argmax(-1) == y[..., 4]).float().mean().item()
    return {"colour": colour, "shape": shape, "digit": digit, "row": row, "column": col}


@torch.no_grad()
def answer_accuracy(model, processor, eval_pool) -> dict[str, float]:
    """Teacher-forced exact match: every answer token (and the end token) is the argmax.

    With greedy decoding this equals generation exact match, at the cost of one forward pass.
    """
    model.eval()
    pad = processor.tokenizer.pad_token_id
    hits = []
    for start in range(0, len(eval_pool["images"]), 256):
        idx = torch.arange(start, min(start + 256, len(eval_pool["images"])))
        batch = lm_batch(eval_pool, idx, pad, model.device)
        labels = batch.pop("labels")
        logits = model(**batch).logits[:, :-1]
        target = labels[:, 1:]
        ok = (logits.argmax(-1) == target) | (target == -100)
        hits.append(ok.all(1).cpu())
    model.train()
    hits = torch.cat(hits).float()
    tasks = eval_pool["tasks"]
    result = {t: hits[tasks == i].mean().item() for i, t in enumerate(eval_pool["names"])}
    result["overall"] = hits[tasks < len(vqa.TASKS)].mean().item()  # the suite's tasks only
    return result


def test_pool(processor, n_per_task: int, seed: int, primers: bool = False) -> dict:
    """Held-out questions, n_per_task of each task; with primers, also n_per_task of each primer.

    Primers have no held-out split: theirs come from the training stream of another seed, a probe
    of whether the one-step skills are there (scenes may repeat ones trained on, questions rarely).
    """
    samples = vqa.load_split("test", n_per_task, seed=seed)
    names = list(vqa.TASKS)
    if primers:
        stream = vqa.train_items(seed + 1, PRIMER_TASKS)
        samples += [vqa.to_sample(next(stream)) for _ in range(n_per_task * len(PRIMER_TASKS))]
        names += list(PRIMER_TASKS)
    raw, input_ids, prompt_lens = encode(processor, samples)
    return {
        "images": torch.from_numpy(raw),
        "input_ids": input_ids,
        "prompt_lens": torch.tensor(prompt_lens),
        "tasks": torch.tensor([names.index(s["source"]) for s in samples]),
        "names": names,
    }


def drop_cot_words(pool: dict, names: list[str], k: int, pad_id: int) -> None:
    """In place: the chain-of-thought primers' answers lose their first k words (one token each).

    The pool keeps the full answers on disk, so every step of the schedule (--cot-drop 0, 1, ...)
    shares one cached pool. Rows stay left padded: the dropped tokens become padding on the left.
    """
    for index, name in enumerate(names):
        drop = min(k, COT_STEPS.get(name, 0))
        if not drop:
            continue
        ids = pool["input_ids"]
        for row in (pool["tasks"] == index).nonzero().flatten().tolist():
            start = int((ids[row] == pad_id).sum()) + int(pool["prompt_lens"][row])  # first answer token
            kept = torch.cat([ids[row, :start], ids[row, start + drop:]])
            ids[row] = torch.cat([torch.full((drop,), pad_id, dtype=ids.dtype), kept])


def parse_curriculum(text: str) -> list[tuple[float, int]]:
    """'0.15:1000,0.3:500' -> [(0.15, 1000), (0.3, 500)]."""
    stages = []
    for part in text.split(","):
        thin, _, steps = part.partition(":")
        try:
            stage = (float(thin), int(steps))
        except ValueError:
            stage = (0.0, 0)
        if not (0 < stage[0] < 1 and stage[1] > 0):
            raise argparse.ArgumentTypeError(f"stage {part!r}: want THIN:STEPS with 0 < THIN < 1 and STEPS > 0, e.g. 0.15:1000")
        stages.append(stage)
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path(".cache/embedded"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=120_000)
    parser.add_argument("--vision-steps", type=int, default=1500)
    parser.add_argument("--vlm-steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--decoder", default="qwen3", help="text model class: qwen3 (shipped) or llama (see build_config)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1, ... (default: cuda when present)")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--init-from", type=Path, default=None, help="continue stage 2 from a saved model (skips stage 1)")
    parser.add_argument("--task-weights", default=None, help="sampling weight per task, e.g. relation=3,count=2 (default 1 each)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--checkpoints", action="store_true", help="also save OUT/step<N> at every evaluation")
    parser.add_argument(
        "--curriculum", type=parse_curriculum, default=[], metavar="THIN:STEPS,...",
        help="start on sparser scenes: e.g. 0.15:1000,0.3:500 draws the first 1000 decoder steps from scenes "
        "thinned to 15%% of the suite's object density, the next 500 from 30%%, then the suite itself",
    )
    parser.add_argument(
        "--primers", action="store_true",
        help="also train on the training-only questions of embedded_tasks.py (one-step lookups), every type an equal share of the pool",
    )
    parser.add_argument("--primer-steps", type=int, default=0, help="with --primers: the first N decoder steps draw primer questions only")
    parser.add_argument("--question-first", action="store_true", help="chat template with the question before the image")
    parser.add_argument(
        "--grow-layers", type=int, default=0,
        help="with --init-from: append N decoder layers that start as the identity (copies of the last N with zero output projections)",
    )
    parser.add_argument(
        "--cot-drop", type=int, default=0,
        help="with --primers: drop the first K words of the chain-of-thought primers' answers (at most embedded_tasks.COT_STEPS of each)",
    )
    parser.add_argument("--vision-from", type=Path, default=None, help="copy a trained vision tower from this checkpoint (skips stage 1)")
    args = parser.parse_args()
    if args.primer_steps and not args.primers:
        parser.error("--primer-steps needs --primers (the pool holds no primer questions without it)")
    if args.grow_layers and not args.init_from:
        parser.error("--grow-layers needs --init-from (it deepens a trained decoder; set --layers for a fresh one)")
    if sum(steps for _, steps in args.curriculum) > args.vlm_steps:
        parser.error(f"--curriculum stages add up to more than --vlm-steps {args.vlm_steps}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.time()
    processor = build_processor(QUESTION_FIRST_TEMPLATE if args.question_first else CHAT_TEMPLATE)
    pad = processor.tokenizer.pad_token_id
    print("building the training pool", flush=True)
    tasks = vqa.TASKS + PRIMER_TASKS if args.primers else vqa.TASKS
    pool = build_pool(processor, args.samples, args.cache, args.seed, tasks)
    # Curriculum: (last step, pool) per sparse stage, in order; after them the full pool.
    stages, end = [], 0
    for thin, steps in args.curriculum:
        end += steps
        stages.append((end, build_pool(processor, min(args.samples, steps * args.batch), args.cache, args.seed, tasks, thin)))
    evals = test_pool(processor, 100, args.seed, primers=args.primers)
    for p in [pool, evals] + [p for _, p in stages]:
        drop_cot_words(p, tasks if p is not evals else evals["names"], args.cot_drop, pad)

    if args.init_from:
        model = LlavaForConditionalGeneration.from_pretrained(args.init_from, dtype=torch.float32).to(args.device)
        previous = json.loads((args.init_from / "training_info.json").read_text())
        vision = previous["vision_cell_accuracy"]
        print(f"continuing from {args.init_from}", flush=True)
        if len(processor.tokenizer) > model.config.text_config.vocab_size:  # words added since (primers)
            model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
        if args.grow_layers:
            grow_decoder(model, args.grow_layers)
            print(f"  decoder grown to {model.config.text_config.num_hidden_layers} layers", flush=True)
    else:
        previous = None
        config = build_config(hidden_size=args.hidden, num_layers=args.layers, decoder=args.decoder)
        model = LlavaForConditionalGeneration(config).to(args.device)
        if args.vision_from:
            source = LlavaForConditionalGeneration.from_pretrained(args.vision_from, dtype=torch.float32)
            model.model.vision_tower.load_state_dict(source.model.vision_tower.state_dict())
            vision = json.loads((args.vision_from / "training_info.json").read_text())["vision_cell_accuracy"]
            print(f"stage 1: vision tower copied from {args.vision_from}", flush=True)
        else:
            print(f"stage 1: vision tower, {args.vision_steps} steps", flush=True)
            head = train_vision(model, pool, args.vision_steps, 256, 3e-3, args.seed)
            vision = vision_accuracy(model, head, processor, args.seed)
        print("  vision cell accuracy (test scenes):", vision, flush=True)
    model.train()

    print(f"stage 2: projector + decoder, {args.vlm_steps} steps", flush=True)
    model.model.vision_tower.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(args.seed + 1 + (1000 if args.init_from else 0))
    weights = {t: 1.0 for t in tasks}
    for part in (args.task_weights or "").split(","):
        if part:
            task, value = part.split("=")
            weights[task] = float(value)
    task_weight = torch.tensor([weights[t] for t in tasks])
    task_primer = torch.tensor([float(t in PRIMER_TASKS) for t in tasks])
    for p in [pool] + [p for _, p in stages]:  # per-question sampling weights, from each one's task
        p["weights"], p["primer"] = task_weight[p["tasks"]], task_primer[p["tasks"]]

    def step_fn(step):
        current = next((p for last, p in stages if step < last), pool)
        if step < args.primer_steps:  # curriculum: the one-step lookups first
            idx = torch.multinomial(current["primer"], args.batch, replacement=True, generator=gen)
        elif args.task_weights:
            idx = torch.multinomial(current["weights"], args.batch, replacement=True, generator=gen)
        else:
            idx = torch.randint(0, len(current["images"]), (args.batch,), generator=gen)
        loss = model(**lm_batch(current, idx, pad, args.device)).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return loss.item()

    def info(accuracy: dict, step: int) -> dict:
        return {
            "continued_from": previous, "step": step,
            "task_weights": args.task_weights,
            "training_tasks": list(tasks), "primer_steps": args.primer_steps,
            "question_first": args.question_first, "vision_from": str(args.vision_from) if args.vision_from else None,
            "seed": args.seed, "decoder": args.decoder, "samples": args.samples, "vision_steps": args.vision_steps,
            "vlm_steps": args.vlm_steps, "batch": args.batch, "lr": args.lr, "threads": args.threads, "device": args.device,
            "curriculum": args.curriculum, "grow_layers": args.grow_layers, "cot_drop": args.cot_drop,
            "vision_cell_accuracy": vision, "teacher_forced_accuracy": accuracy,
            "wall_seconds": round(time.time() - started),
            "torch": torch.__version__,
        }

    def evaluate(step: int) -> None:
        accuracy = answer_accuracy(model, processor, evals)
        print(f"  eval at step {step}:", json.dumps({k: round(v, 3) for k, v in accuracy.items()}), flush=True)
        if args.checkpoints:  # a snapshot per evaluation, so a long run can be stopped at its best
            save(copy.deepcopy(model), processor, args.out / f"step{step}", info(accuracy, step))

    run_steps(args.vlm_steps, step_fn, args.warmup, optimizer, [args.lr], log_every=100, eval_fn=evaluate, eval_every=args.eval_every)
    final = answer_accuracy(model, processor, evals)
    print("final (teacher-forced, 100/task):", json.dumps(final), flush=True)
    save(model, processor, args.out, info(final, args.vlm_steps))
    print(f"saved to {args.out} in {round(time.time() - started)}s")


def grow_decoder(model, n: int) -> None:
    """Append n decoder layers that leave the model's function unchanged until they are trained.

    Each is a copy of one of the last n layers (its attention patterns and MLP features are a
    start) whose attention output and MLP down projections are zero, so it adds nothing to the
    residual stream: a find that happens late in the decoder gets layers after it to build on.
    """
    layers = model.model.language_model.layers
    text = model.config.text_config
    for source in list(layers)[-n:]:
        layer = copy.deepcopy(source)
        layer.self_attn.o_proj.weight.data.zero_()
        layer.mlp.down_proj.weight.data.zero_()
        layers.append(layer)
    renumber_layers(layers)
    if getattr(text, "layer_types", None):
        text.layer_types = list(text.layer_types) + list(text.layer_types[-n:])
    text.num_hidden_layers = len(layers)


def save(model, processor, out: Path, info: dict) -> None:
    """fp16 on CPU, with the processor and a training_info.json that --init-from can continue."""
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.to("cpu", torch.float16).save_pretrained(out)
    processor.save_pretrained(out)
    (out / "training_info.json").write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
