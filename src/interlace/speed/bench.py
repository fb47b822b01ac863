"""Prefill latency, decode speed and memory of a dense and a pruned model, next to their FLOP bound.

How it measures (benchmarks/bench_flop_bound.py checks it against the FLOP count):

- Both models get one synthetic prompt: an image block (if ``image_size`` is set) followed by
  ``prompt_tokens`` random text tokens. Qwen-VL image blocks are built by hand in the processor's
  layout (its processor needs torchvision); other VLMs go through their own processor.
- Runs alternate A, B, A, B, ... after ``warmup`` unmeasured rounds. Per-model figures are medians
  over ``repeats``; a speedup is the median over rounds of A's time / B's time in that round, so
  drift of a shared machine slower than one round cancels.
- A run is one greedy ``generate`` of exactly ``new_tokens`` tokens. A forward hook stamps the end
  of each forward (after ``torch.cuda.synchronize`` on GPU): TTFT = call start to end of the
  prefill forward; decode tokens/s = (new_tokens - 1) / (end of last forward - end of first).
  A pre-hook also stamps the start of each forward, so decode tokens/s *in the forward* leaves out
  what ``generate`` does between forwards (logits processing, stopping criteria, cache and mask
  bookkeeping: about 5 ms a step on one CPU thread, the same for A and B, which is why end-to-end
  decode of a small model stays below the FLOP bound).
- Memory is what a run adds to what is already resident (the weights): on CUDA
  ``max_memory_allocated`` minus ``memory_allocated`` before the run (tensors only, no allocator
  cache); on Linux CPUs the peak RSS (VmHWM, reset through /proc/self/clear_refs) minus the RSS
  before the run. glibc keeps memory freed by earlier runs inside the process, and a run that
  reuses it raises no RSS: that is how a CPU run measured 0.0 MiB. So before each run the free
  memory goes back to the OS (glibc's ``malloc_trim(0)``) and the run's pages count again; with
  another C library the figure is a lower bound. We report the largest over repeats.
  tracemalloc cannot see torch's allocations.

The FLOP model lives in ``interlace.speed.flops``; what to measure, ``BenchSettings``, in
``interlace.speed.settings``.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch

from interlace.speed.flops import TokenCounts, forward_flops
from interlace.speed.settings import DEFAULT_IMAGE, BenchSettings, parse_image_size  # noqa: F401 (parse_image_size: imported from here too)


def device_problems(device: str | None) -> list[str]:
    """A --device that torch cannot use here: not a device name, or a GPU this machine lacks."""
    if device is None:
        return []
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        return [f"--device {device!r} is not a torch device; pass cpu, cuda or cuda:N"]
    if parsed.type == "cpu":
        return []
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return [f"--device {device}: no CUDA GPU is visible here; pass --device cpu"]
        if parsed.index is not None and parsed.index >= count:
            return [f"--device {device}: there are {count} CUDA GPU(s) here, cuda:0..cuda:{count - 1}; pass one of them"]
        return []
    return [f"--device {device}: bench measures on cpu or cuda only; pass one of them"]


def resolve_image_size(config: Any, image_size: tuple[int, int] | None | str) -> tuple[int, int] | None:
    """Turn ``"auto"`` into 448x448 for a vision-language config and None for a text-only one."""
    if image_size == "auto":
        return DEFAULT_IMAGE if getattr(config, "vision_config", None) is not None else None
    return image_size


# --------------------------------------------------------------------------------------- inputs


def qwen_vl_image_block(config: Any, height: int, width: int) -> tuple[list[int], dict[str, torch.Tensor]]:
    """Token ids and tensors of one image for Qwen2/2.5/3-VL, shaped as their processor makes them.

    Height and width are rounded to multiples of patch * merge (the processor's smart_resize
    without its min/max pixel clamp). Pixels are random normal values (already "normalised").

    Returns:
        ``[vision_start] + [image] * (h * w / merge**2) + [vision_end]`` and ``pixel_values`` of
        shape (t*h*w, C*t_patch*p*p) with ``image_grid_thw`` = [[1, h, w]] in patches.
    """
    v = config.vision_config
    p, merge, t = v.patch_size, v.spatial_merge_size, v.temporal_patch_size
    factor = p * merge
    rows, cols = (max(factor, round(x / factor) * factor) // p for x in (height, width))
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(rows * cols, v.in_channels * t * p * p, generator=generator)
    image = [config.image_token_id] * (rows * cols // merge**2)
    ids = [config.vision_start_token_id, *image, config.vision_end_token_id]
    return ids, {"pixel_values": pixels, "image_grid_thw": torch.tensor([[1, rows, cols]])}


def _processor_image_block(
    config: Any, processor: Any, height: int, width: int
) -> tuple[list[int], dict, tuple[int, ...]]:
    """Image tokens and tensors from the model's own processor; ViT sequence lengths from pixel_values' shape."""
    from PIL import Image

    pixels = torch.randint(0, 256, (height, width, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    out = processor(text=processor.image_token, images=[Image.fromarray(pixels.numpy())], return_tensors="pt")
    v = config.vision_config
    size = v.image_size if isinstance(v.image_size, int) else v.image_size[0]
    patch = v.patch_size if isinstance(v.patch_size, int) else v.patch_size[0]
    tiles = out["pixel_values"].numel() // (3 * size * size)
    per_tile = (size // patch) ** 2 + int(v.model_type.startswith("clip"))  # CLIP adds a CLS token
    tensors = {k: val for k, val in out.items() if k not in ("input_ids", "attention_mask")}
    return out["input_ids"][0].tolist(), tensors, (per_tile,) * tiles


def build_inputs(config: Any, processor: Any, settings: BenchSettings) -> tuple[dict[str, torch.Tensor], TokenCounts]:
    """The benchmark prompt for a model with ``config``: image block (if any), then random non-special text tokens.

    Returns:
        CPU tensors (``input_ids``, ``attention_mask`` and the image tensors) and their token counts.

    Raises:
        ValueError: an image was asked for a text-only model, or for a VLM without a processor
            that is not a Qwen-VL.
    """
    text = config.get_text_config(decoder=True)
    values = [getattr(c, n) for c in (config, text) for n in c.to_dict() if n.endswith(("token_id", "token_index"))]
    special = {i for v in values for i in (v if isinstance(v, list) else [v])}  # eos_token_id may be a list
    special |= set(getattr(getattr(processor, "tokenizer", processor), "all_special_ids", None) or ())
    allowed = torch.tensor([i for i in range(text.vocab_size) if i not in special])
    generator = torch.Generator().manual_seed(settings.seed)
    text_ids = allowed[torch.randint(len(allowed), (settings.prompt_tokens,), generator=generator)].tolist()
    block, tensors, seq_lens = [], {}, ()
    image_size = resolve_image_size(config, settings.image_size)
    if image_size is not None:
        vision = getattr(config, "vision_config", None)
        if vision is None:
            raise ValueError(f"{config.model_type} is a text-only model; use --image-size none")
        if hasattr(vision, "temporal_patch_size"):
            block, tensors = qwen_vl_image_block(config, *image_size)
            seq_lens = (int(tensors["image_grid_thw"].prod()),)
        elif hasattr(processor, "image_processor") and hasattr(processor, "image_token"):
            block, tensors, seq_lens = _processor_image_block(config, processor, *image_size)
        else:
            raise ValueError(
                f"{config.model_type} needs its processor to build an image prompt; load one or use --image-size none"
            )
    image_id = getattr(config, "image_token_id", None) or getattr(config, "image_token_index", None)
    ids = torch.tensor([block + text_ids])
    image_tokens = int((ids == image_id).sum()) if image_id is not None else 0
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), **tensors}
    if "image_grid_thw" in tensors:
        inputs["mm_token_type_ids"] = (ids == image_id).int()  # M-RoPE needs it (transformers 5)
    return inputs, TokenCounts(ids.shape[1] - image_tokens, image_tokens, seq_lens)


# ------------------------------------------------------------------------------------ measuring


class Run(NamedTuple):
    """One measured generate. ``*_cpu_*``: the same in process CPU time (CPU device only, else None);
    ``decode_forward_tokens_per_s``: decode counting only the time inside the model's forwards."""

    ttft_s: float
    decode_tokens_per_s: float
    memory_bytes: int | None
    ttft_cpu_s: float | None
    decode_cpu_tokens_per_s: float | None
    decode_forward_tokens_per_s: float | None = None


@dataclass
class BenchResult:
    """One model: medians over its measured runs, its analytic FLOPs, and the runs in round order.

    Attributes:
        prompt_tokens: decoder input length, text and image tokens together; image_tokens of them image.
        ttft_s, decode_tokens_per_s: wall-clock medians.
        ttft_cpu_s, decode_cpu_tokens_per_s: the same in process CPU time, which leaves out time
            spent waiting for a core on a shared machine (not cache or bandwidth contention); None on GPU.
        decode_forward_tokens_per_s: decode over the time inside the model's forwards only (None
            where the engine does not expose them, e.g. vLLM).
        run_memory_bytes: the largest memory a run added to what was resident (see module docstring).
        weights_bytes: parameters and buffers.
        prefill_flops, decode_flops_per_token: the analytic FLOPs of this model on this prompt.
        runs: every measured run (``Run`` fields), in round order.
    """

    name: str
    num_layers: int
    prompt_tokens: int
    image_tokens: int
    new_tokens: int
    ttft_s: float
    decode_tokens_per_s: float
    ttft_cpu_s: float | None
    decode_cpu_tokens_per_s: float | None
    run_memory_bytes: int | None
    weights_bytes: int
    prefill_flops: float
    decode_flops_per_token: float
    runs: list[dict[str, Any]] = field(default_factory=list)
    decode_forward_tokens_per_s: float | None = None


@dataclass
class BenchComparison:
    """A (dense) against B (pruned).

    Speedups are the median over rounds of A's time / B's time within the round (the two runs
    were adjacent in time, so slow drift of the machine cancels); FLOP bounds are FLOPs(A) / FLOPs(B).
    """

    settings: BenchSettings
    a: BenchResult
    b: BenchResult | None
    memory_method: str
    machine: dict[str, Any]

    def _paired(self, key: str, throughput: bool) -> float | None:
        if self.b is None or self.a.runs[0].get(key) is None:
            return None
        ratios = [(y[key] / x[key]) if throughput else (x[key] / y[key]) for x, y in zip(self.a.runs, self.b.runs)]
        return statistics.median(ratios)

    @property
    def prefill_speedup(self) -> float | None:
        return self._paired("ttft_s", throughput=False)

    @property
    def decode_speedup(self) -> float | None:
        return self._paired("decode_tokens_per_s", throughput=True)

    @property
    def prefill_cpu_speedup(self) -> float | None:
        return self._paired("ttft_cpu_s", throughput=False)

    @property
    def decode_cpu_speedup(self) -> float | None:
        return self._paired("decode_cpu_tokens_per_s", throughput=True)

    @property
    def decode_forward_speedup(self) -> float | None:
        """Decode speedup inside the model's forwards: the part of a step that pruning can change."""
        return self._paired("decode_forward_tokens_per_s", throughput=True)

    @property
    def prefill_flop_bound(self) -> float | None:
        return self.b and self.a.prefill_flops / self.b.prefill_flops

    @property
    def decode_flop_bound(self) -> float | None:
        return self.b and self.a.decode_flops_per_token / self.b.decode_flops_per_token

    def to_json(self) -> dict[str, Any]:
        names = ("prefill_speedup", "decode_speedup", "prefill_flop_bound", "decode_flop_bound",
                 "prefill_cpu_speedup", "decode_cpu_speedup", "decode_forward_speedup")
        return {"settings": asdict(self.settings), "a": asdict(self.a), "b": self.b and asdict(self.b),
                **{n: getattr(self, n) for n in names}, "memory_method": self.memory_method, "machine": self.machine}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


def schedule(names: Sequence[Any], warmup: int, repeats: int) -> list[tuple[Any, bool]]:
    """Run order: whole rounds A, B, A, B, ...; the first ``warmup`` rounds are marked unmeasured."""
    return [(name, r < warmup) for r in range(warmup + repeats) for name in names]


def _status_kb(field_name: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field_name + ":"))
    return int(line.split()[1]) * 1024


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0), which returns the process's free heap memory to the OS; a no-op
    where the C library has none (musl, macOS)."""
    import ctypes
    import ctypes.util

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0) and None


def _memory_probe(device: torch.device) -> tuple[str, Callable[[], Callable[[], int | None]]]:
    """(method description, start()) where start() returns a stop() giving the run's added bytes."""
    if device.type == "cuda":
        def start_cuda():
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            return lambda: torch.cuda.max_memory_allocated(device) - before
        method = "torch.cuda.max_memory_allocated - memory_allocated before the run (tensors; no allocator cache)"
        return method, start_cuda
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        return "unavailable: needs Linux /proc/self/clear_refs or a CUDA device", lambda: lambda: None

    trim = _malloc_trim()

    def start_cpu():
        trim()
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kb("VmRSS")
        return lambda: _status_kb("VmHWM") - before
    method = "peak RSS (VmHWM after /proc/self/clear_refs) - RSS before the run, free heap returned to the OS first (glibc malloc_trim)"
    return method, start_cpu


def _run_once(model: Any, inputs: dict, new_tokens: int, device: torch.device, start_memory: Callable) -> Run:
    """One greedy generate of exactly ``new_tokens`` tokens."""
    from transformers import GenerationConfig

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    stamps: list[tuple[float, float]] = []  # (wall, process CPU) at the end of each forward
    starts: list[float] = []  # wall clock at the start of each forward

    def stamp(*_: Any) -> None:
        sync()
        stamps.append((time.perf_counter(), time.process_time()))

    def stamp_start(*_: Any) -> None:
        sync()
        starts.append(time.perf_counter())

    handles = [model.register_forward_pre_hook(stamp_start), model.register_forward_hook(stamp)]
    pad = model.config.get_text_config(decoder=True).pad_token_id
    config = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              pad_token_id=0 if pad is None else pad)
    stop_memory = start_memory()
    sync()
    start = (time.perf_counter(), time.process_time())
    try:
        model.generate(**inputs, generation_config=config)
    finally:
        for handle in handles:
            handle.remove()
    assert len(stamps) == len(starts) == new_tokens, f"expected one forward per token, got {len(stamps)} for {new_tokens}"
    first, last = stamps[0], stamps[-1]
    in_forward = sum(end[0] - begin for begin, end in zip(starts[1:], stamps[1:]))  # decode forwards only
    cpu = device.type == "cpu"
    return Run(first[0] - start[0], (new_tokens - 1) / (last[0] - first[0]), stop_memory(),
               first[1] - start[1] if cpu else None, (new_tokens - 1) / (last[1] - first[1]) if cpu else None,
               (new_tokens - 1) / in_forward)


def _machine(device: torch.device, threads: int) -> dict[str, Any]:
    import transformers

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": str(device), "threads": threads}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    elif Path("/proc/cpuinfo").exists():
        info["cpu"] = next((x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                            if x.startswith("model name")), platform.processor())
    return info


def benchmark(model_a: Any, model_b: Any = None, processor: Any = None, settings: BenchSettings | None = None,
              names: tuple[str, str] = ("A", "B"), fast: bool = False) -> BenchComparison:
    """Measure TTFT, decode tokens/s and run memory of ``model_a`` (and ``model_b``), alternating runs.

    Args:
        model_a: the reference (dense) model, on its device, in eval mode.
        model_b: the model to compare (pruned), on the same device; None measures A alone.
        processor: A's processor or tokenizer (needed for images of non-Qwen VLMs).
        settings: what to measure (default ``BenchSettings()``).
        names: labels of A and B in the results.
        fast: use ``BenchSettings.fast()`` (a rough speedup in seconds, for ``interlace compare``);
            only without ``settings``.

    Returns:
        BenchComparison with a BenchResult per model, speedups and FLOP bounds.

    Raises:
        ValueError: the prompt cannot be built (see ``build_inputs``), or both settings and fast.
    """
    if settings is not None and fast:
        raise ValueError("pass either settings or fast=True, not both (BenchSettings.fast(**overrides) combines them)")
    settings = settings or (BenchSettings.fast() if fast else BenchSettings())
    settings = replace(settings, image_size=resolve_image_size(model_a.config, settings.image_size))
    models = [model_a] if model_b is None else [model_a, model_b]
    device = next(model_a.parameters()).device
    inputs, counts = build_inputs(model_a.config, processor, settings)
    dtype = next(model_a.parameters()).dtype
    inputs = {k: v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()}
    method, start_memory = _memory_probe(device)
    threads_before = torch.get_num_threads()
    if device.type == "cpu" and settings.threads:
        torch.set_num_threads(settings.threads)
    runs: list[list[Run]] = [[] for _ in models]
    try:
        with torch.inference_mode():
            for index, warm in schedule(range(len(models)), settings.warmup, settings.repeats):
                run = _run_once(models[index], inputs, settings.new_tokens, device, start_memory)
                if not warm:
                    runs[index].append(run)
    finally:
        torch.set_num_threads(threads_before)
    results = []
    for name, model, model_runs in zip(names, models, runs):
        prefill, decode = forward_flops(model.config, counts, settings.new_tokens)
        medians = {k: None if None in (v := [getattr(r, k) for r in model_runs]) else statistics.median(v)
                   for k in ("ttft_s", "decode_tokens_per_s", "ttft_cpu_s", "decode_cpu_tokens_per_s",
                           "decode_forward_tokens_per_s")}
        memory = [r.memory_bytes for r in model_runs]
        results.append(BenchResult(
            name=name, num_layers=model.config.get_text_config(decoder=True).num_hidden_layers,
            prompt_tokens=counts.prompt_tokens, image_tokens=counts.image_tokens, new_tokens=settings.new_tokens,
            **medians, run_memory_bytes=None if None in memory else max(memory),
            weights_bytes=sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]),
            prefill_flops=prefill, decode_flops_per_token=decode, runs=[r._asdict() for r in model_runs]))
    threads = (settings.threads or threads_before) if device.type == "cpu" else 0
    return BenchComparison(settings, results[0], results[1] if len(results) > 1 else None, method,
                           _machine(device, threads))


def quick_speedup(dense: Any, pruned: Any, processor: Any = None) -> float | None:
    """The prefill speedup of ``pruned`` over ``dense`` from a few short runs (``BenchSettings.fast``),
    rounded to 3 places: the speedup column of `interlace compare` and `sweep --bench`. A rough
    figure in seconds, not one to publish (`interlace bench` measures); None where undefined."""
    speedup = benchmark(dense, pruned, processor=processor, fast=True).prefill_speedup
    return None if speedup is None else round(speedup, 3)
