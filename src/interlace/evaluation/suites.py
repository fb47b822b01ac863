"""Which held-out evaluation a model gets, and what its retention means.

- ``vqa``: the built-in visual-QA suite (greedy, exact match), for VLMs on the embedded model or
  the embedded data. Retention = pruned accuracy / dense accuracy.
- ``text``: held-out real text (``interlace.data.realtext``) for text-only LMs: perplexity on
  every token of held-out documents, plus exact-match / multiple-choice tasks built from them.
  Retention = dense perplexity / pruned perplexity (1.0 = no loss; 0.5 = perplexity doubled),
  i.e. exp(dense loss - pruned loss) per token. ``overall`` stays the tasks' mean accuracy.

Every suite returns the JSON of ``interlace.evaluation.generate.EvalResult`` (overall, tasks, counts, n,
and for text perplexity, tokens and passages), so prune, compare, sweep and eval report them the
same way. Retention is undefined when the reference is 0 (a dense model that answers nothing
right): ``retention`` gives None then, shown as "n/a" (``format_retention``), never a crash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from interlace.config.options import is_embedded


def retention(reference: float | None, value: float | None, lower_is_better: bool = False) -> float | None:
    """How much of ``reference`` a result keeps: value / reference, or for a metric where lower is
    better (perplexity) reference / value; rounded to 4 places.

    Returns:
        None when it is undefined: a missing, zero, negative or non-finite reference or value
        (dense accuracy 0: every pruned accuracy is "infinitely" retained, which means nothing).
    """
    if reference is None or value is None or not (math.isfinite(reference) and math.isfinite(value)):
        return None
    if reference <= 0 or value < 0 or (lower_is_better and value == 0):  # a perplexity is >= 1
        return None
    return round(reference / value if lower_is_better else value / reference, 4)


def format_retention(value: float | None, digits: int = 3) -> str:
    """A retention for a table or log line: "n/a" where it is undefined (see ``retention``)."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


@dataclass(frozen=True)
class Suite:
    """A held-out evaluation.

    Attributes:
        name: "vqa" or "text".
        default_n: items per task (and, for text, perplexity passages) when none is asked for.
        metric: what ``retention`` compares, for tables ("accuracy" or "perplexity").
    """

    name: str
    default_n: int
    metric: str

    def evaluate(
        self, model: Any, processor: Any, n: int | None = None, split: str = "test", description: str = "evaluating",
        progress: bool = True, batch_size: int | None = None,
    ) -> dict:
        """The suite on ``split`` ("test": held-out; "calib": the validation split of a search).

        Args:
            n: items per task (text: also the perplexity passages); None: ``default_n``.
            batch_size: prompts per generate call (vqa, default 64) or passages per perplexity
                forward (text, default 8).
        """
        n = n or self.default_n
        if self.name == "vqa":
            from interlace.data.vqa import load_split
            from interlace.evaluation.generate import evaluate

            samples = load_split(split, n)
            return evaluate(model, processor, samples, batch_size=batch_size or 64, progress=progress, description=description).to_json()
        from interlace.evaluation.text import evaluate_text

        return evaluate_text(model, processor, n=n, items=n, split=split, progress=progress, batch_size=batch_size or 8).to_json()

    def retention(self, dense: dict, pruned: dict) -> float | None:
        """Pruned against dense (see ``retention``): the one rule every report uses (prune's
        summary, compare's rows, table and chart, sweep's probes): perplexity for text (lower is
        better), overall accuracy for vqa."""
        if self.metric == "perplexity":
            return retention(dense.get("perplexity"), pruned.get("perplexity"), lower_is_better=True)
        return retention(dense.get("overall"), pruned.get("overall"))

    def definition(self) -> str:
        """What this suite's retention means, for a table or a model card."""
        if self.name == "text":
            return "dense perplexity / pruned perplexity (1.0: no loss; 0.5: perplexity doubled)"
        return "pruned accuracy / dense accuracy (exact match, mean over questions)"

    def headline(self, result: dict) -> str:
        if self.name == "text":
            return f"perplexity {result['perplexity']:.2f}, tasks {result['overall']:.3f}"
        return f"overall {result['overall']:.3f}"


VQA = Suite("vqa", 500, "accuracy")
TEXT = Suite("text", 100, "perplexity")
SUITES = {suite.name: suite for suite in (VQA, TEXT)}  # by the name reports record


def first_per_task(samples: list[dict], n: int | None) -> list[dict]:
    """The first ``n`` samples of each ``source`` (task), in their order; all of them for None."""
    if n is None:
        return samples
    seen: dict[str, int] = {}
    kept = []
    for sample in samples:
        task = sample.get("source", "")
        if seen.get(task, 0) < n:
            seen[task] = seen.get(task, 0) + 1
            kept.append(sample)
    return kept


def evaluate_rows(model: Any, processor: Any, samples: list[dict], n: int | None = None, batch_size: int | None = None, progress: bool = True) -> dict:
    """A model on held-out rows of the caller's own (``interlace eval --data``), in the JSON shape of
    the built-in suites.

    - plain-text rows (``{"text": ...}``), text model: perplexity over every token, and the
      continuation and cloze tasks built from the rows (``evaluate_text``); ``n`` caps the items
      per task and the perplexity passages.
    - chat rows, with or without images: the greedy reply to each row's first question scored by
      exact match, per ``source``; a text model also gets the perplexity of the replies. ``n``
      caps the rows per source.

    Raises:
        ValueError: no rows, plain-text rows for a vision-language model, images for a text model.
    """
    from interlace.data.chat import is_plain
    from interlace.loading import is_vision_language

    if not samples:
        raise ValueError("no rows to evaluate")
    vision = is_vision_language(model.config)
    plain = [is_plain(sample) for sample in samples]
    if any(plain) and not all(plain):
        raise ValueError("the rows mix plain text ({'text': ...}) and chat turns ({'texts': [...]}); evaluate them as two files")
    if all(plain):
        if vision:
            raise ValueError("plain-text rows score a text model's perplexity; a vision-language model needs chat rows with answers")
        from interlace.evaluation.text import evaluate_text

        count = n or len(samples)
        return evaluate_text(model, processor, n=count, items=count, samples=samples, progress=progress, batch_size=batch_size or 8).to_json()
    samples = first_per_task(samples, n)
    if not vision:
        if any(sample.get("images") for sample in samples):
            raise ValueError("the rows hold images, but the model is text-only; drop the images or evaluate a vision-language model")
        from interlace.evaluation.text import evaluate_chat_text

        return evaluate_chat_text(model, processor, samples, batch_size=batch_size or 8, progress=progress).to_json()
    from interlace.evaluation.generate import evaluate

    return evaluate(model, processor, samples, batch_size=batch_size or 64, progress=progress).to_json()


def suite_for(config: Any, model: str | None, data: str) -> Suite | None:
    """The suite for a model (by its config) and a ``--data`` spec; None when none applies (a VLM
    on data of its own: use ``interlace eval --harness lmms-eval``)."""
    from interlace.loading import is_vision_language

    if not is_vision_language(config):
        return TEXT
    if is_embedded(model) or data.startswith("embedded"):
        return VQA
    return None


def default_data(model: str | None) -> str:
    """The ``--data`` a command uses when none is given: the embedded visual-QA suite, or for a
    text-only model the real English text of ``interlace.data.realtext`` (it has no images)."""
    from interlace.data import realtext
    from interlace.loading import is_vision_language, read_config, resolve

    if is_embedded(model):
        return "embedded"
    try:
        config = read_config(resolve(model))  # never prompts: validation refuses remote code
    except ValueError:
        return "embedded"  # the model's own error is reported by validation
    return "embedded" if is_vision_language(config) else realtext.NAME
