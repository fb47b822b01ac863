"""Which held-out evaluation a model gets, and what its retention means.

- ``vqa``: the built-in visual-QA suite (greedy, exact match), for VLMs on the embedded model or
  the embedded data. Retention = pruned accuracy / dense accuracy.
- ``text``: held-out real text (``interlace.data.realtext``) for text-only LMs: perplexity on
  every token of held-out documents, plus exact-match / multiple-choice tasks built from them.
  Retention = dense perplexity / pruned perplexity (1.0 = no loss; 0.5 = perplexity doubled),
  i.e. exp(dense loss - pruned loss) per token. ``overall`` stays the tasks' mean accuracy.

Every suite returns the JSON of ``interlace.evaluate.EvalResult`` (overall, tasks, n, and for
text perplexity and tokens), so prune, compare, sweep and eval report them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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

    def evaluate(self, model: Any, processor: Any, n: int | None = None, split: str = "test", description: str = "evaluating", progress: bool = True) -> dict:
        """The suite on ``split`` ("test": held-out; "calib": the validation split of a search)."""
        n = n or self.default_n
        if self.name == "vqa":
            from interlace.data.vqa import load_split
            from interlace.evaluate import evaluate

            return evaluate(model, processor, load_split(split, n), progress=progress, description=description).to_json()
        from interlace.evaluate_text import evaluate_text

        return evaluate_text(model, processor, n=n, items=n, split=split, progress=progress).to_json()

    def retention(self, dense: dict, pruned: dict) -> float | None:
        if self.name == "text":
            return round(dense["perplexity"] / pruned["perplexity"], 4) if pruned.get("perplexity") else None
        return round(pruned["overall"] / dense["overall"], 4) if dense["overall"] else None

    def headline(self, result: dict) -> str:
        if self.name == "text":
            return f"perplexity {result['perplexity']:.2f}, tasks {result['overall']:.3f}"
        return f"overall {result['overall']:.3f}"


VQA = Suite("vqa", 500, "accuracy")
TEXT = Suite("text", 100, "perplexity")


def suite_for(config: Any, model: str | None, data: str) -> Suite | None:
    """The suite for a model (by its config) and a ``--data`` spec; None when none applies (a VLM
    on data of its own: use ``interlace eval --harness lmms-eval``)."""
    from interlace.loading import is_vision_language

    if not is_vision_language(config):
        return TEXT
    if model in (None, "embedded") or data.startswith("embedded"):
        return VQA
    return None


def default_data(model: str | None) -> str:
    """The ``--data`` a command uses when none is given: the embedded visual-QA suite, or for a
    text-only model the real English text of ``interlace.data.realtext`` (it has no images)."""
    from transformers import AutoConfig

    from interlace.data import realtext
    from interlace.loading import is_vision_language, resolve

    if model in (None, "embedded"):
        return "embedded"
    try:
        config = AutoConfig.from_pretrained(resolve(model), trust_remote_code=False)  # never prompt: validation refuses such models
    except (OSError, ValueError):
        return "embedded"  # the model's own error is reported by validation
    return "embedded" if is_vision_language(config) else realtext.NAME
