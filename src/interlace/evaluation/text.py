"""Held-out evaluation of text models on real English: perplexity and two exact-match tasks.

Everything is built from the *test* split of the pydocs corpus (``interlace.data.realtext``:
whole documents of the Python documentation that calibration and healing never see), the same
way for a seed, with the raw text tokenized as is (no chat template):

- perplexity: exp of the mean next-token cross-entropy over every token of each passage.
  **Perplexity retention** of a pruned model is ``dense_ppl / pruned_ppl`` (``ppl_retention``):
  1.0 is as good as the dense model, 0.5 twice its perplexity; like accuracy retention, higher
  is better and it cannot pass 1 by much.
- ``continuation`` (multiple choice, chance 0.25): the text before a sentence boundary near the
  middle of a passage, and four candidate next sentences: the true one and three drawn (seeded)
  from other test documents, of similar length. The model picks the candidate with the highest
  summed log-likelihood given the text.
- ``cloze`` (exact match, LAMBADA-style: Paperno et al. 2016, arXiv 1606.06031): the last word
  of a sentence, predicted greedily from the text before it. A sentence qualifies when it ends
  in ``word.`` with ``word`` a lowercase word of at least 4 letters that is not a function word
  (CLOZE_STOPWORDS); each passage gives its last qualifying sentence. The prediction is right
  when greedy decoding yields exactly the word's tokens (checked in one pass, as lm-eval does).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interlace.data import realtext
from interlace.data.chat import IGNORE_INDEX
from interlace.evaluation.generate import EvalResult
from interlace.lm_loss import labelled_ce_sum
from interlace.progress import progress as progress_bar

TASKS = ("continuation", "cloze")
CLOZE_WORD = re.compile(r"(?<=\s)([a-z]{4,})\.$")
CLOZE_STOPWORDS = frozenset(
    "also been both does done each even ever from have here into just like made make many more most much must "
    "once only other over same some such than that them then there these they this those thus very were what "
    "when where which while will with would your about above after again before below itself instead "
    "otherwise well first last next none true false used using given below following".split()
)


@dataclass(frozen=True)
class ClozeItem:
    """Predict ``target`` (a word, with its leading space) right after ``context``."""

    context: str
    target: str
    source: str


@dataclass(frozen=True)
class ChoiceItem:
    """Pick the continuation of ``context`` among ``choices``; ``answer`` indexes the true one."""

    context: str
    choices: tuple[str, ...]
    answer: int
    source: str


# ---------------------------------------------------------------------------------------------
# Items from passages (pure)


def trim_context(text: str, max_chars: int) -> str:
    """The end of text in at most max_chars characters, starting at a sentence (else a word)."""
    if len(text) <= max_chars:
        return text
    tail = text[-max_chars:]
    starts = [match.end() for match in realtext.SENTENCE_END.finditer(tail)] + [
        match.end() for match in re.finditer(r"\n\n", tail)
    ]
    if starts:
        return tail[min(starts) :]
    return tail[tail.find(" ") + 1 :] if " " in tail else tail


def cloze_item(text: str, source: str = "", context_chars: int = 300, min_context: int = 100) -> ClozeItem | None:
    """The passage's last qualifying sentence as a cloze item (rule: module docstring), or None."""
    sentences = []  # (end offset of each sentence in text)
    offset = 0
    for paragraph in text.split("\n\n"):
        for sentence in realtext.split_sentences(paragraph):
            start = text.index(sentence, offset)
            offset = start + len(sentence)
            sentences.append(offset)
    for end in reversed(sentences):
        match = CLOZE_WORD.search(text[:end])
        if match and match[1] not in CLOZE_STOPWORDS and match.start() >= min_context:
            context = text[: match.start()].rstrip()
            return ClozeItem(trim_context(context, context_chars), " " + match[1], source)
    return None


def continuation_split(
    text: str, context_chars: int = 300, min_context: int = 150, length: tuple[int, int] = (40, 120)
) -> tuple[str, str] | None:
    """(text before a sentence boundary, the next sentence with its leading space), or None.

    The boundary is the one inside a paragraph nearest the passage's middle that has at least
    min_context characters before it and a next sentence of length[0]..length[1] characters.
    """
    best: tuple[float, str, str] | None = None
    offset = 0
    for paragraph in text.split("\n\n"):
        sentences = realtext.split_sentences(paragraph)
        start = text.index(paragraph, offset)
        offset = start + len(paragraph)
        position = start
        for sentence, following in zip(sentences, sentences[1:]):
            position = text.index(sentence, position) + len(sentence)
            if position >= min_context and length[0] <= len(following) <= length[1]:
                distance = abs(position - len(text) / 2)
                if best is None or distance < best[0]:
                    best = (distance, text[:position], " " + following)
    if best is None:
        return None
    return trim_context(best[1], context_chars), best[2]


def cloze_items(samples: Sequence[dict], n: int, context_chars: int = 300) -> list[ClozeItem]:
    """Up to n cloze items, one per qualifying passage, in the samples' order."""
    items = []
    for sample in samples:
        item = cloze_item(sample["text"], sample["source"], context_chars)
        if item is not None:
            items.append(item)
        if len(items) == n:
            break
    return items


def choice_items(
    samples: Sequence[dict], n: int, seed: int = 0, choices: int = 4, context_chars: int = 300
) -> list[ChoiceItem]:
    """Up to n continuation items, one per usable passage in the samples' order.

    Distractors are true continuations of passages from other documents, drawn with the seed
    among those within a factor 1.5 of the true one's length (any other document's, if too
    few); the answer's position is drawn too.
    """
    if choices < 2:
        raise ValueError(f"choices must be >= 2, got {choices}")
    pool = []
    for sample in samples:
        split = continuation_split(sample["text"], context_chars)
        if split is not None:
            pool.append((sample["source"], *split))
    rng = np.random.default_rng(seed)
    items = []
    for source, context, truth in pool:
        others = [text for other, _, text in pool if other != source and text != truth]
        similar = [text for text in others if 2 / 3 <= len(text) / len(truth) <= 3 / 2]
        candidates = similar if len(similar) >= choices - 1 else others
        if len(set(candidates)) < choices - 1:
            continue
        picked = rng.choice(sorted(set(candidates)), size=choices - 1, replace=False).tolist()
        answer = int(rng.integers(choices))
        items.append(ChoiceItem(context, tuple(picked[:answer] + [truth] + picked[answer:]), answer, source))
        if len(items) == n:
            break
    return items


def ppl_retention(dense_ppl: float, pruned_ppl: float) -> float | None:
    """Perplexity retention: dense_ppl / pruned_ppl (1.0: no worse than the dense model); None where
    it is undefined (a perplexity that is not a positive number): the text suite's rule,
    ``interlace.evaluation.suites.Suite.retention``."""
    from interlace.evaluation.suites import TEXT

    return TEXT.retention({"perplexity": dense_ppl}, {"perplexity": pruned_ppl})


# ---------------------------------------------------------------------------------------------
# Scoring with a model


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _pad_id(tokenizer: Any) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def _encode(tokenizer: Any, text: str, special: bool, max_length: int | None = None) -> list[int]:
    ids = tokenizer(text, add_special_tokens=special)["input_ids"]
    return list(ids[:max_length] if max_length is not None else ids)


def _forward(model: Any, input_ids: torch.Tensor, keep: int = 0, **kwargs: Any) -> Any:
    """model(input_ids) computing logits for the last ``keep`` positions only (0: all), where the
    model supports ``logits_to_keep`` (transformers >= 4.50); else all logits, sliced."""
    if keep and "logits_to_keep" in inspect.signature(model.forward).parameters:
        return model(input_ids=input_ids, logits_to_keep=keep, **kwargs)
    output = model(input_ids=input_ids, **kwargs)
    if keep:
        output.logits = output.logits[:, -keep:]
    return output


def _cache_argument(model: Any) -> str:
    # transformers 5.24 renamed forward's past_key_values to cache (the old name goes in 5.40).
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def perplexity(
    model: Any,
    tokenizer: Any,
    samples: Sequence[dict],
    batch_size: int = 8,
    max_length: int = 512,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[float, int]:
    """exp(mean next-token cross-entropy) over every token of each plain-text sample.

    Each ``sample["text"]`` is tokenized raw (``add_special_tokens=True``, no chat template) and
    cut to max_length tokens; a batch is right-padded, padding masked out of attention and loss.
    The loss is computed without the batch's full logits (``interlace.lm_loss``), so memory grows
    with batch_size x max_length hidden states, not with the vocabulary.

    Returns:
        The perplexity and the number of tokens predicted (each passage's tokens after its first).
    """
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    encoded = [_encode(tokenizer, sample["text"], True, max_length) for sample in samples]
    if sum(max(len(ids) - 1, 0) for ids in encoded) == 0:
        raise ValueError("nothing to score: no sample has two or more tokens")
    order = sorted(range(len(encoded)), key=lambda index: -len(encoded[index]))  # little padding
    device, pad_id = _device(model), _pad_id(tokenizer)
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = [encoded[index] for index in order[start : start + batch_size]]
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = labels[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        # Never the (B, T, V) logits: with Gemma 3's 262k vocabulary they were 4 GiB a batch.
        loss, tokens = labelled_ce_sum(model, {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}, labels.to(device))
        total += loss
        count += tokens
        if on_batch:
            on_batch(len(batch))
    return math.exp(total / count), count


@torch.no_grad()
def cloze_hits(
    model: Any, tokenizer: Any, items: Sequence[ClozeItem], on_item: Callable[[int], None] | None = None
) -> list[bool]:
    """Whether greedy decoding after each item's context yields exactly its target's tokens."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    hits = []
    for item in items:
        target = _encode(tokenizer, item.target, False)
        ids = _encode(tokenizer, item.context, True) + target
        logits = _forward(model, torch.tensor([ids], device=_device(model)), keep=len(target) + 1).logits
        hits.append(logits[0, -len(target) - 1 : -1].argmax(-1).tolist() == target)
        if on_item:
            on_item(1)
    return hits


@torch.no_grad()
def choice_logprobs(model: Any, tokenizer: Any, context: str, choices: Sequence[str]) -> list[float]:
    """Summed log-probability of each choice's tokens after the context.

    The context runs once; its KV cache is repeated for the choices, which run as one
    right-padded batch (padding follows every real token, so the causal mask keeps it out).
    """
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    device = _device(model)
    context_ids = _encode(tokenizer, context, True)
    encoded = [_encode(tokenizer, choice, False) for choice in choices]
    if not context_ids or not all(encoded):
        raise ValueError("the context and every choice need at least one token")
    output = _forward(model, torch.tensor([context_ids], device=device), keep=1, use_cache=True)
    first = torch.log_softmax(output.logits[0, -1].float(), -1)  # (V,): each choice's first token
    cache = output.get("cache") if output.get("cache") is not None else output.get("past_key_values")
    cache.batch_repeat_interleave(len(encoded))  # (1, ...) -> (K, ...) in place
    width = max(len(ids) for ids in encoded)
    batch = torch.full((len(encoded), width), _pad_id(tokenizer), dtype=torch.long)
    for row, ids in enumerate(encoded):
        batch[row, : len(ids)] = torch.tensor(ids)
    logits = model(input_ids=batch.to(device), **{_cache_argument(model): cache}, use_cache=True).logits  # (K, W, V)
    scores = []
    for row, ids in enumerate(encoded):  # one choice's fp32 log-softmax at a time: (len - 1, V)
        logprobs = torch.log_softmax(logits[row, : len(ids) - 1].float(), -1)
        rest = logprobs[torch.arange(len(ids) - 1), torch.tensor(ids[1:], dtype=torch.long, device=logprobs.device)].sum()
        scores.append(float(first[ids[0]] + rest))
    return scores


def choice_predictions(
    model: Any, tokenizer: Any, items: Sequence[ChoiceItem], on_item: Callable[[int], None] | None = None
) -> list[int]:
    """The index of the most likely choice of each item."""
    predictions = []
    for item in items:
        scores = choice_logprobs(model, tokenizer, item.context, item.choices)
        predictions.append(int(np.argmax(scores)))
        if on_item:
            on_item(1)
    return predictions


def evaluate_text(
    model: Any,
    tokenizer: Any,
    n: int = 64,
    items: int = 100,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
    *,
    split: str = "test",
    max_length: int = 512,
    root: str | Path | None = None,
    samples: Sequence[dict] | None = None,
) -> EvalResult:
    """Perplexity and the continuation and cloze tasks on a pydocs split (held-out test by default),
    or on plain-text ``samples`` of the caller's own.

    Args:
        model: a causal LM (transformers-style forward with ``past_key_values``).
        tokenizer: its tokenizer (or a processor that holds one).
        n: passages for perplexity.
        items: items per task (fewer if the split yields fewer).
        batch_size: passages per perplexity forward pass (memory: batch_size x max_length
            hidden states; the logits are never held whole, see ``interlace.lm_loss``).
        seed: the order of the test passages and the distractors' draw.
        progress: report progress (``interlace.progress``).
        split: the pydocs split to build from: "test" (held-out), or "calib" as the validation
            split of a ratio search (never the healing split).
        max_length: cut passages to this many tokens for perplexity.
        root: the corpus' directory (see ``realtext.find_root``).
        samples: plain-text samples (``{"text": ...}``, e.g. the rows of ``interlace eval
            --data rows.jsonl``) to use instead of pydocs, in their order; each row counts as
            its own document when distractors are drawn.

    Returns:
        ``overall``: the mean of the tasks' accuracies; ``tasks``: each task's accuracy;
        ``counts``: each task's items; ``n``: their sum; ``passages``, ``perplexity`` and ``tokens``.

    Raises:
        DataSpecError: the corpus is not installed.
    """
    if model.training:
        raise ValueError("evaluate_text needs the model in eval mode (dropout would change the scores); call model.eval()")
    if split not in ("test", "calib"):
        raise ValueError(f"evaluate_text builds from the 'test' or 'calib' split, got {split!r}")
    if samples is None:
        passages = realtext.load_passages(split, None, seed, root=root)
    else:
        if not samples or not all(isinstance(sample.get("text"), str) for sample in samples):
            raise ValueError("evaluate_text needs plain-text samples ({'text': ...}); chat rows go through evaluate_chat_text")
        passages = [{"text": sample["text"], "source": f"row {index}"} for index, sample in enumerate(samples)]
    cloze = cloze_items(passages, items)
    choice = choice_items(passages, items, seed)
    scored = passages[:n]
    with progress_bar("text evaluation", len(scored) + len(cloze) + len(choice), unit="passages and items", enabled=progress) as bar:
        ppl, tokens = perplexity(model, tokenizer, scored, batch_size, max_length, on_batch=bar.advance)
        hits = cloze_hits(model, tokenizer, cloze, on_item=bar.advance)
        picks = choice_predictions(model, tokenizer, choice, on_item=bar.advance)
    results = {  # a task without items (rows too short or too few to build any) is left out
        "continuation": [pick == item.answer for pick, item in zip(picks, choice)],
        "cloze": hits,
    }
    tasks = {task: float(np.mean(outcomes)) for task, outcomes in results.items() if outcomes}
    return EvalResult(
        overall=float(np.mean(list(tasks.values()))) if tasks else float("nan"),
        tasks=tasks,
        n=len(cloze) + len(choice),
        counts={task: len(outcomes) for task, outcomes in results.items() if outcomes},
        passages=len(scored),
        perplexity=ppl,
        tokens=tokens,
    )


def answer_perplexity(
    model: Any, processor: Any, samples: Sequence[dict], batch_size: int = 8, on_batch: Callable[[int], None] | None = None
) -> tuple[float, int]:
    """exp(mean cross-entropy) over the assistant tokens of chat samples (the tokens healing trains
    on), through the chat template; and the number of those tokens."""
    from interlace.data.chat import collate_groups, encode_for_training, tokenizer_of

    encoded = sorted((encode_for_training(processor, s) for s in samples), key=lambda e: e["input_ids"].shape[1])
    pad_id = _pad_id(tokenizer_of(processor))
    device, total, count = _device(model), 0.0, 0
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        for batch in collate_groups(chunk, pad_id):
            labels = batch.pop("labels").to(device)
            loss, tokens = labelled_ce_sum(model, {k: v.to(device) for k, v in batch.items()}, labels)
            total, count = total + loss, count + tokens
        if on_batch:
            on_batch(len(chunk))
    if count == 0:
        raise ValueError("nothing to score: no row has an assistant reply")
    return math.exp(total / count), count


def evaluate_chat_text(model: Any, processor: Any, samples: Sequence[dict], batch_size: int = 8, progress: bool = True) -> EvalResult:
    """A text model on chat rows of the caller's own (``interlace eval --data``): exact match of the
    greedy reply to each row's first question, per ``source``, and the perplexity of the replies.

    Returns:
        ``overall``/``tasks``/``counts``/``n`` as ``interlace.evaluation.generate.score``; ``perplexity`` and
        ``tokens`` over every assistant turn.
    """
    from interlace.evaluation.generate import generate_answers, score

    with progress_bar("text evaluation", 2 * len(samples), unit="rows (x2: perplexity, replies)", enabled=progress) as bar:
        ppl, tokens = answer_perplexity(model, processor, samples, batch_size, on_batch=bar.advance)
        answers = generate_answers(model, processor, samples, batch_size, on_batch=bar.advance)
    result = score(samples, answers)
    result.perplexity, result.tokens = ppl, tokens
    return result
