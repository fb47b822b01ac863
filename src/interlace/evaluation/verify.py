"""Check that a checkpoint written by interlace is a correct, self-contained transformers model.

Every checkpoint the tool writes goes through ``verify``: it must reload with
plain ``from_pretrained`` (no custom code, no ``trust_remote_code``) without missing or unexpected
weights, give the in-memory model's logits, and greedy generation with the KV cache must equal
generation without it (a stale ``layer_idx`` breaks exactly that:
tests/test_surgery_matrix.py::test_verify_catches_stale_layer_idx).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    PreTrainedConfig,
    PreTrainedModel,
)

from interlace.arch import KEPT_FIELD
from interlace.data.chat import prompt_text, tokenize
from interlace.loading import ModelNotFoundError, loading_problems, model_class, read_config, without_load_report

PROMPT = "Describe the picture."


class VerificationError(RuntimeError):
    """A written checkpoint does not reload, or does not behave like the model it came from."""


@dataclass
class VerifyReport:
    """Outcome of ``verify``; every check listed passed (failures raise).

    Attributes:
        model_dir: the checked directory.
        model_class: the auto class's concrete class used to reload it.
        num_layers: decoder layers in the reloaded config.
        kept_layers: original indices of those layers (``interlace_kept_layers``), if recorded.
        input_kind: where the test input came from (given, processor, tokenizer, token ids).
        max_abs_logit_diff: largest |reloaded - in-memory| logit; None without an in-memory model.
        generated: greedy token ids generated with the KV cache.
        generation_note: "identical", or which near-tie let the two generations differ.
    """

    model_dir: str
    model_class: str
    num_layers: int
    kept_layers: list[int] | None
    input_kind: str
    max_abs_logit_diff: float | None
    generated: list[list[int]] = field(default_factory=list)
    generation_note: str = "identical"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _picture(size: int = 64) -> Image.Image:
    grad = np.linspace(0, 255, size, dtype=np.uint8)
    channels = [np.tile(grad, (size, 1)), np.tile(grad[:, None], (1, size)), np.full((size, size), 128, np.uint8)]
    pixels = np.stack(channels, -1)  # (H, W, 3): two gradients and a constant
    return Image.fromarray(pixels, "RGB")


def default_inputs(model_dir: str | Path, config: PreTrainedConfig) -> tuple[dict[str, torch.Tensor], str]:
    """A small input: image + text through the saved processor's chat template if it loads, else text.

    Qwen-VL processors need torchvision (video processor); without it this falls back to the
    tokenizer, and without a tokenizer to a fixed sequence of token ids.
    """
    try:
        processor = AutoProcessor.from_pretrained(model_dir)
    except Exception:  # noqa: BLE001 - any failure means "no usable processor"
        processor = None
    if processor is not None and hasattr(processor, "image_processor") and getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return dict(processor(images=[_picture()], text=text, return_tensors="pt")), "processor: image + text"
    vocab = config.get_text_config(decoder=True).vocab_size
    if any(Path(model_dir).glob("tokenizer*")):  # AutoTokenizer builds an empty tokenizer from nothing
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            if tokenizer.chat_template:  # a chat model: the prompt it is served with
                sample = {"images": [], "texts": [{"user": PROMPT, "assistant": ""}], "source": "verify"}
                encoded = tokenize(tokenizer, [sample], [prompt_text(tokenizer, sample)])
                if 0 < encoded["input_ids"].numel() and int(encoded["input_ids"].max()) < vocab:
                    return encoded, "tokenizer: chat template"
            encoded = dict(tokenizer(PROMPT, return_tensors="pt"))
            if 0 < encoded["input_ids"].numel() and int(encoded["input_ids"].max()) < vocab:
                return encoded, "tokenizer: text"
        except Exception:  # noqa: BLE001 - fall through to fixed token ids
            pass
    ids = torch.randint(min(16, vocab - 1), vocab, (1, 12), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, "token ids: text"


def _to(inputs: dict[str, Any], model: PreTrainedModel) -> dict[str, Any]:
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(model.device, model.dtype if value.is_floating_point() else None)
        out[key] = value
    return out


def _generate(model: PreTrainedModel, inputs: dict[str, Any], new: int, use_cache: bool):
    pad = model.config.get_text_config(decoder=True).pad_token_id
    return model.generate(
        **inputs, max_new_tokens=new, do_sample=False, use_cache=use_cache, return_dict_in_generate=True,
        output_logits=True, pad_token_id=pad if pad is not None else 0,
    )


def _compare_generations(cached, uncached, prompt_len: int, tie_tol: float, who: str = "reloaded model") -> str:
    """'identical', or a note when the first divergence is a near-tie in the uncached logits; else raise."""
    a, b = cached.sequences, uncached.sequences
    if a.shape == b.shape and torch.equal(a, b):
        return "identical"
    width = min(a.shape[1], b.shape[1])
    diff = (a[:, :width] != b[:, :width]).nonzero()
    if len(diff) == 0:
        raise VerificationError(f"{who}: cached generation has {a.shape[1]} tokens, uncached {b.shape[1]}")
    row, col = diff[0].tolist()
    step = col - prompt_len
    logits = uncached.logits[step][row].float()
    gap = (logits[a[row, col]] - logits[b[row, col]]).abs().item()
    if gap <= tie_tol * max(1.0, logits.abs().max().item()):
        return f"near-tie at new token {step} of row {row} (logit gap {gap:.2e}); prefixes before it are identical"
    raise VerificationError(
        f"{who}: cached greedy generation differs from uncached at new token {step} of row {row}: "
        f"{a[row, prompt_len:].tolist()} vs {b[row, prompt_len:].tolist()} (logit gap {gap:.3g}); "
        "a stale layer_idx or per-layer config field is the usual cause"
    )


def _require_finite(logits: torch.Tensor, who: str) -> None:
    """Raise on any NaN or inf logit: a NaN difference compares False with ``> atol`` and would pass."""
    bad = int((~torch.isfinite(logits)).sum())
    if bad:
        raise VerificationError(
            f"{bad} of the {logits.numel()} logits of {who} are NaN or inf: its weights hold non-finite values "
            "(a diverged healing run or a damaged source model); the checkpoint is unusable"
        )


@torch.no_grad()
def verify(
    model_dir: str | Path,
    model: PreTrainedModel | None = None,
    inputs: dict[str, Any] | None = None,
    *,
    max_new_tokens: int = 4,
    atol: float = 0.0,
    tie_tol: float = 1e-4,
) -> VerifyReport:
    """Reload ``model_dir`` with plain ``from_pretrained`` and check it behaves.

    Args:
        model_dir: a checkpoint directory (config.json + safetensors).
        model: the in-memory model it was saved from; when given, logits must match it.
        inputs: model keyword arguments; built from the saved processor or tokenizer when None.
        max_new_tokens: greedy tokens to generate with and without the KV cache.
        atol: allowed |logit| difference against ``model`` (0 = bitwise equal).
        tie_tol: a cached/uncached divergence is accepted only where the two chosen tokens'
            logits are within ``tie_tol`` (relative to the largest logit): a numerical tie.

    Returns:
        VerifyReport of the passed checks.

    Raises:
        VerificationError: no checkpoint at ``model_dir``, missing/unexpected/mismatched weights,
            invalid config, non-finite logits (reloaded or in-memory), logits that differ, a
            forward that crashes, or cached greedy generation (reloaded, and in-memory when given)
            that differs from uncached generation.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        what = "does not exist" if not model_dir.exists() else "has no config.json"
        raise VerificationError(f"{model_dir} {what}; pass a directory written by save_pretrained (config.json + weights)")
    try:
        config = read_config(model_dir)
    except ModelNotFoundError as error:
        raise VerificationError(str(error)) from None
    cls = model_class(config)
    dtype = model.dtype if model is not None else "auto"
    try:
        with without_load_report():  # what it would log is raised below, in one line
            reloaded, info = cls.from_pretrained(model_dir, dtype=dtype, output_loading_info=True, ignore_mismatched_sizes=True)
    except torch.OutOfMemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - a checkpoint that does not load is a failed check
        raise VerificationError(f"{model_dir} does not reload with {cls.__name__}.from_pretrained: {type(error).__name__}: {error}") from error
    problems = loading_problems(info)
    if problems:
        raise VerificationError(
            f"reloading {model_dir} with {cls.__name__}.from_pretrained did not match the weights to the config: "
            f"{problems}. The config and the saved layers disagree (a stale num_hidden_layers reloads random layers)"
        )
    if model is not None:
        reloaded.to(model.device)
    reloaded.eval()
    if hasattr(reloaded.config, "validate"):
        try:
            reloaded.config.validate()
        except Exception as error:  # noqa: BLE001 - report any validation failure the same way
            raise VerificationError(f"the reloaded config of {model_dir} fails validation: {error}") from error

    kind = "given"
    if inputs is None:
        inputs, kind = default_inputs(model_dir, config)
    inputs = _to(inputs, reloaded)

    max_diff = None
    prompt_len = inputs["input_ids"].shape[1]
    stage = "forward of the reloaded model"
    try:
        theirs = reloaded(**inputs).logits
        _require_finite(theirs, f"the reloaded {model_dir}")
        if model is not None:
            stage = "forward of the in-memory model"
            model.eval()
            ours = model(**inputs).logits
            _require_finite(ours, "the in-memory model")
            max_diff = (ours.float() - theirs.float()).abs().max().item() if ours.shape == theirs.shape else math.inf
            if not max_diff <= atol:
                raise VerificationError(
                    f"logits of the reloaded {model_dir} differ from the in-memory model by {max_diff:.3g} "
                    f"(allowed {atol})"
                )
        stage = "generation of the reloaded model"
        cached = _generate(reloaded, inputs, max_new_tokens, use_cache=True)
        uncached = _generate(reloaded, inputs, max_new_tokens, use_cache=False)
        note = _compare_generations(cached, uncached, prompt_len, tie_tol)
        if model is not None:
            stage = "cached generation of the in-memory model"
            # The reloaded model rebuilds layer_idx from its config; the in-memory one keeps whatever
            # surgery left, so its cached generation is the check for stale layer_idx.
            ours_cached = _generate(model, inputs, max_new_tokens, use_cache=True)
            note_memory = _compare_generations(ours_cached, uncached, prompt_len, tie_tol, "in-memory model")
            if note_memory != "identical":
                note = f"{note}; in-memory model: {note_memory}"
    except VerificationError:
        raise
    except Exception as error:  # noqa: BLE001 - a crash in a checked forward is a failed check
        raise VerificationError(f"verifying {model_dir}: {stage} failed: {type(error).__name__}: {error}") from error
    text = reloaded.config.get_text_config(decoder=True)
    return VerifyReport(
        model_dir=str(model_dir),
        model_class=type(reloaded).__name__,
        num_layers=text.num_hidden_layers,
        kept_layers=getattr(text, KEPT_FIELD, None),
        input_kind=kind,
        max_abs_logit_diff=max_diff,
        generated=cached.sequences[:, prompt_len:].tolist(),
        generation_note=note,
    )
