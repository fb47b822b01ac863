"""Built-in evaluation: greedy generation on the visual-QA suite, exact-match accuracy per task."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from interlace.data.chat import modality_groups, prompt_text, tokenize, tokenizer_of
from interlace.progress import progress as progress_bar


@dataclass
class EvalResult:
    """Exact-match accuracy: overall (mean over samples), per task (the sample's ``source``).

    ``n`` is the number of items over all tasks and ``counts`` each task's. A text evaluation
    (``interlace.evaluation.text``) also sets ``perplexity`` (held-out, per token), ``tokens``
    (how many tokens it was measured on) and ``passages`` (how many texts); its ``overall`` is
    the mean of its tasks' accuracies.
    """

    overall: float
    tasks: dict[str, float]
    n: int
    predictions: list[str] = field(default_factory=list, repr=False)
    perplexity: float | None = None
    tokens: int | None = None
    counts: dict[str, int] | None = None
    passages: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("predictions")
        for key in ("perplexity", "tokens", "counts", "passages"):  # unset: left out, as before they existed
            if data[key] is None:
                data.pop(key)
        return data

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


def normalise(answer: str) -> str:
    return " ".join(answer.lower().strip().rstrip(".").split())


def score(samples: Sequence[dict], predictions: Sequence[str]) -> EvalResult:
    """Exact match of each prediction against the sample's first assistant turn (normalised)."""
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions")
    if not samples:
        raise ValueError("nothing to evaluate: the sample list is empty")
    by_task: dict[str, list[bool]] = defaultdict(list)
    for sample, prediction in zip(samples, predictions):
        by_task[sample["source"]].append(normalise(prediction) == normalise(sample["texts"][0]["assistant"]))
    hits = [hit for task_hits in by_task.values() for hit in task_hits]
    return EvalResult(
        overall=sum(hits) / len(hits),
        tasks={task: sum(h) / len(h) for task, h in sorted(by_task.items())},
        n=len(hits),
        predictions=list(predictions),
        counts={task: len(h) for task, h in sorted(by_task.items())},
    )


@torch.no_grad()
def generate_answers(
    model: Any,
    processor: Any,
    samples: Sequence[dict],
    batch_size: int = 64,
    max_new_tokens: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy answers to each sample's first question, through the processor's chat template."""
    tokenizer = tokenizer_of(processor)
    device = next(model.parameters()).device if hasattr(model, "parameters") else "cpu"
    answers: list[str] = [""] * len(samples)
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        for group in modality_groups(batch):  # samples with and without images never share a call
            chunk = [batch[i] for i in group]
            inputs = {k: v.to(device) for k, v in tokenize(processor, chunk, [prompt_text(processor, s) for s in chunk]).items()}
            output = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            for i, text in zip(group, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                answers[start + i] = text.strip()
        if on_batch:
            on_batch(len(batch))
    return answers


def evaluate(
    model: Any,
    processor: Any,
    samples: Sequence[dict],
    batch_size: int = 64,
    max_new_tokens: int = 8,
    progress: bool = True,
    description: str = "evaluating",
) -> EvalResult:
    """Generate greedy answers for every sample and score them by exact match.

    Args:
        model: anything with a transformers-style ``generate``.
        processor: the model's processor (or tokenizer for text-only samples).
        samples: FineVision-schema samples; ``source`` is the task name.
        batch_size: prompts per generate call (left padded).
        max_new_tokens: generation budget per answer.
        progress: report progress (``interlace.progress``).
        description: the progress label.
    """
    with progress_bar(description, len(samples), enabled=progress, unit="questions") as bar:
        answers = generate_answers(model, processor, samples, batch_size, max_new_tokens, on_batch=bar.advance)
    return score(samples, answers)
