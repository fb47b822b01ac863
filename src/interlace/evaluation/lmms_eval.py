"""Evaluate a checkpoint through lmms-eval, and export the embedded suite as an lmms-eval task.

lmms-eval (https://github.com/EvolvingLMMs-Lab/lmms-eval) is an optional extra that usually lives
in its own environment (`make lmms-setup` creates `.venv-lmms`): its PyPI torchvision does not
import beside a CPU-only torch wheel. So interlace never imports it; it builds the command line,
runs it with that environment's python and reads the results JSON it writes.

The embedded held-out suite is exported as a `datasets` folder (one split per question type, read
with ``load_from_disk`` so nothing touches the Hub) plus one lmms-eval task per question type and a
group ``interlace_vqa`` over them. The model sees the question only; lmms-eval's model class
applies the checkpoint's own chat template, and answers are scored by exact match with
:func:`interlace.evaluation.generate.normalise`, so the numbers match ``interlace eval``'s built-in harness.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from interlace.evaluation.generate import normalise

LMMS_VERSION = "0.7.3"  # the version whose model registry the table below was read from
SUITE_GROUP = "interlace_vqa"
SUITE_METRIC = "exact_match"


@dataclass(frozen=True)
class LmmsModel:
    """How lmms-eval runs one architecture.

    Attributes:
        name: the ``--model`` name in lmms-eval's registry.
        takes_dtype: whether that class accepts ``dtype=`` in ``--model_args`` (the others pick
            their own dtype and reject unknown arguments).
    """

    name: str
    takes_dtype: bool = False


# transformers `config.model_type` -> lmms-eval model class, for the architectures interlace prunes
# and lmms-eval 0.7.3 serves (lmms_eval/models/__init__.py). llava_hf loads llava and llava_onevision
# through their HF classes (lmms-eval's own `llava_onevision` is the original, non-HF repo).
# Idefics3, SmolVLM and PaliGemma have no class there.
LMMS_MODEL_TYPES: dict[str, LmmsModel] = {
    "llava": LmmsModel("llava_hf", takes_dtype=True),
    "llava_onevision": LmmsModel("llava_hf", takes_dtype=True),
    "qwen2_vl": LmmsModel("qwen2_vl"),
    "qwen2_5_vl": LmmsModel("qwen2_5_vl"),
    "qwen3_vl": LmmsModel("qwen3_vl"),
    "gemma3": LmmsModel("gemma3"),
    "internvl": LmmsModel("internvl_hf"),
    "mllama": LmmsModel("llama_vision", takes_dtype=True),
}


class LmmsEvalError(RuntimeError):
    """lmms-eval is missing, failed, or wrote no results."""


def lmms_model_for(model_type: str) -> LmmsModel:
    """The lmms-eval model class for a transformers ``model_type``.

    Raises:
        ValueError: lmms-eval has no class for this architecture; the message lists those it has.
    """
    if model_type not in LMMS_MODEL_TYPES:
        known = ", ".join(sorted(LMMS_MODEL_TYPES))
        raise ValueError(f"lmms-eval {LMMS_VERSION} has no model class for model_type {model_type!r}; supported: {known}")
    return LMMS_MODEL_TYPES[model_type]


def checkpoint_model_type(model_dir: str | Path) -> str:
    """The transformers ``model_type`` in a checkpoint directory's config.json."""
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        raise ValueError(f"{model_dir} has no config.json; lmms-eval needs a local checkpoint directory")
    return json.loads(config.read_text())["model_type"]


def lmms_eval_command(
    model_dir: str | Path,
    tasks: Sequence[str],
    *,
    model_type: str | None = None,
    batch_size: int = 1,
    limit: int | None = None,
    output_path: str | Path = "lmms-eval-out",
    python: str | Path = sys.executable,
    include_path: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> list[str]:
    """The argv that runs lmms-eval on a local checkpoint.

    Args:
        model_dir: checkpoint directory (config.json, weights, processor).
        tasks: lmms-eval task or group names, e.g. ``["interlace_vqa"]`` or ``["mmmu_val"]``.
        model_type: transformers ``model_type``; read from ``model_dir/config.json`` when None.
        batch_size: lmms-eval ``--batch_size`` (llava_hf accepts only 1).
        limit: questions per task (``--limit``); None for all.
        output_path: where lmms-eval writes its results and per-sample logs.
        python: the interpreter that has lmms-eval installed.
        include_path: a folder of extra task YAMLs (``--include_path``), e.g. the exported suite.
        device: "cpu", "cuda", "cuda:1", ...; None for cuda when this process sees a GPU, else cpu.
        dtype: weights dtype ("float32", "bfloat16", ...) for classes that take one; None for the
            class's default.

    Returns:
        The command as a list, ready for ``subprocess.run``.

    Raises:
        ValueError: no tasks, a bad batch size or limit, an architecture lmms-eval cannot run, or a
            dtype for a class that picks its own.
    """
    if not tasks or any(not task or "," in task for task in tasks):
        raise ValueError(f"tasks must be non-empty names without commas, got {list(tasks)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (or None for all), got {limit}")
    lmms = lmms_model_for(model_type or checkpoint_model_type(model_dir))
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    # device_map too: llava_hf's default of "" is refused by transformers 5's from_pretrained.
    model_args = f"pretrained={Path(model_dir).resolve()},device_map={device}"
    if dtype is not None:
        if not lmms.takes_dtype:
            raise ValueError(f"lmms-eval's {lmms.name} chooses its own dtype; leave dtype unset")
        model_args += f",dtype={dtype}"
    command = [
        str(python), "-m", "lmms_eval", "eval",
        "--model", lmms.name,
        "--model_args", model_args,
        "--tasks", ",".join(tasks),
        "--batch_size", str(batch_size),
        "--output_path", str(output_path),
        "--device", device,
        "--log_samples",
    ]  # fmt: skip
    if limit is not None:
        command += ["--limit", str(limit)]
    if include_path is not None:
        command += ["--include_path", str(include_path)]
    return command


def has_lmms_eval(python: str | Path) -> bool:
    """Whether ``python`` can import lmms_eval (checked without importing it, so in a second)."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('lmms_eval') is None)"
    try:
        return subprocess.run([str(python), "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def parse_results(results_json: Mapping) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` from lmms-eval's results JSON (groups included).

    lmms-eval keys metrics as ``"metric,filter"``; the default filter ``none`` is dropped from the
    name. Non-numeric entries (aliases, "N/A" stderrs) are left out.
    """
    parsed: dict[str, dict[str, float]] = {}
    for section in ("results", "groups"):
        for task, metrics in results_json.get(section, {}).items():
            for key, value in metrics.items():
                if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                metric, _, filter_name = key.partition(",")
                name = metric if filter_name == "none" else key
                if not math.isnan(value):
                    parsed.setdefault(task, {})[name] = float(value)
    return parsed


def _newest_results(output_path: Path, since: float) -> Path | None:
    found = [p for p in output_path.rglob("*_results.json") if p.stat().st_mtime >= since]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def run_lmms_eval(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Run an :func:`lmms_eval_command` and return its metrics.

    Args:
        command: the argv from :func:`lmms_eval_command` (it names the python and output path).
        env: extra environment variables for the run (e.g. ``OMP_NUM_THREADS``, ``HF_HUB_OFFLINE``).
        echo: called with each line lmms-eval prints (e.g. ``print``); None to stay quiet.

    Returns:
        ``{task: {metric: value}}`` for every task and group in the run.

    Raises:
        LmmsEvalError: lmms-eval is not installed in that python, exits non-zero, or writes no
            results; the first line says which, the next ones are its last lines of output.
    """
    python = command[0]
    if not has_lmms_eval(python):
        raise LmmsEvalError(f"lmms-eval is not installed in {python}")
    output_path = Path(command[command.index("--output_path") + 1])
    output_path.mkdir(parents=True, exist_ok=True)
    started = time.time() - 1  # mtime resolution
    tail: deque[str] = deque(maxlen=30)
    with subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line.rstrip("\n"))
            if echo:
                echo(line.rstrip("\n"))
        returncode = process.wait()
    results = _newest_results(output_path, started)
    if returncode != 0 or results is None:
        why = f"exited with status {returncode}" if returncode else f"wrote no *_results.json under {output_path}"
        # lmms-eval logs most failures and still exits 0, so a missing results file is the signal.
        raise LmmsEvalError(f"lmms-eval {why}\nlast output:\n" + "\n".join(tail))
    return parse_results(json.loads(results.read_text()))


# ---------------------------------------------------------------------------------------------
# The embedded suite as an lmms-eval task


def suite_task_name(task: str) -> str:
    """The lmms-eval task name of one question type of the embedded suite."""
    return f"{SUITE_GROUP}_{task}"


_UTILS_HEADER = '''"""lmms-eval hooks for the interlace embedded visual-QA suite (written by interlace.evaluation.lmms_eval)."""


def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    # The question only: the model class applies the checkpoint's chat template around it.
    return doc["question"]


def process_results(doc, results):
    return {"exact_match": float(normalise(results[0]) == normalise(doc["answer"]))}


# Copied from interlace.evaluation.generate so scores match the built-in harness without importing interlace.
'''

_TASK_YAML = """task: {name}
dataset_path: {data}
dataset_kwargs:
  load_from_disk: true
test_split: {split}
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
process_results: !function utils.process_results
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  temperature: 0
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def export_suite_for_lmms(
    out_dir: str | Path,
    n_per_task: int,
    *,
    tasks: Sequence[str] | None = None,
    seed: int = 0,
    max_new_tokens: int = 8,
) -> Path:
    """Write the embedded held-out suite as a local dataset and lmms-eval task files.

    The result holds ``data/`` (a ``datasets.DatasetDict`` saved to disk, one split per question
    type, columns ``id, task, question, answer, image``), one task YAML per question type named
    :func:`suite_task_name`, the group ``interlace_vqa.yaml`` (accuracy over all questions) and
    ``utils.py`` with the prompt and exact-match hooks. Pass ``out_dir`` to lmms-eval's
    ``--include_path``.

    Args:
        out_dir: folder to write (created; existing files of the same names are replaced).
        n_per_task: held-out questions per question type (1..1000), as ``interlace eval``.
        tasks: question types to export; all of them when None.
        seed: suite seed (the shipped model uses 0).
        max_new_tokens: generation budget per answer, as the built-in evaluation.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ValueError: an unknown question type or n_per_task out of range.
    """
    import datasets

    from interlace.data import vqa

    tasks = tuple(tasks or vqa.TASKS)
    unknown = sorted(set(tasks) - set(vqa.TASKS))
    if unknown:
        raise ValueError(f"unknown question types {unknown}; choose from {', '.join(vqa.TASKS)}")
    samples = vqa.load_split("test", n_per_task, tasks=tasks, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    features = datasets.Features(
        {
            "id": datasets.Value("int64"),
            "task": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "image": datasets.Image(),
        }
    )
    splits = {}
    for task in tasks:
        rows = [(i, s) for i, s in enumerate(samples) if s["source"] == task]
        splits[task] = datasets.Dataset.from_dict(
            {
                "id": [i for i, _ in rows],
                "task": [task] * len(rows),
                "question": [s["texts"][0]["user"] for _, s in rows],
                "answer": [s["texts"][0]["assistant"] for _, s in rows],
                "image": [s["images"][0] for _, s in rows],
            },
            features=features,
        )
    data = out / "data"
    bars_were_off = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        datasets.DatasetDict(splits).save_to_disk(str(data))
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()
    (out / "utils.py").write_text(_UTILS_HEADER + "\n" + inspect.getsource(normalise))
    for task in tasks:
        yaml = _TASK_YAML.format(name=suite_task_name(task), data=data.resolve(), split=task, max_new_tokens=max_new_tokens)
        (out / f"{suite_task_name(task)}.yaml").write_text(yaml)
    members = "".join(f"  - {suite_task_name(task)}\n" for task in tasks)
    (out / f"{SUITE_GROUP}.yaml").write_text(
        f"group: {SUITE_GROUP}\ntask:\n{members}aggregate_metric_list:\n"
        f"  - metric: {SUITE_METRIC}\n    aggregation: mean\n    weight_by_size: true\nmetadata:\n  version: 1.0\n"
    )
    return out


def default_lmms_python(root: str | Path = ".") -> Path:
    """``.venv-lmms/bin/python`` under ``root`` when `make lmms-setup` made it, else this python."""
    candidate = Path(root) / ".venv-lmms" / "bin" / "python"
    return candidate if candidate.exists() else Path(sys.executable)


def evaluate_with_lmms(
    model_dir: str | Path,
    tasks: Sequence[str] = (SUITE_GROUP,),
    *,
    n_per_task: int = 500,
    python: str | Path | None = None,
    output_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
    **command_kwargs,
) -> dict[str, dict[str, float]]:
    """Export the embedded suite when a task asks for it, run lmms-eval, return its metrics.

    Args:
        model_dir: local checkpoint directory.
        tasks: lmms-eval task names; ``interlace_vqa`` and ``interlace_vqa_<type>`` are the
            embedded suite, anything else is lmms-eval's own.
        n_per_task: embedded-suite questions per question type.
        python: interpreter with lmms-eval; :func:`default_lmms_python` when None.
        output_path: where lmms-eval writes results and per-sample logs; a temporary folder
            (deleted afterwards) when None.
        env: extra environment variables for the lmms-eval process.
        echo: called with each line lmms-eval prints.
        **command_kwargs: passed to :func:`lmms_eval_command` (batch_size, limit, device, dtype).

    Returns:
        ``{task: {metric: value}}``.

    Raises:
        LmmsEvalError: lmms-eval is missing from ``python`` or its run failed.
    """
    python = Path(python) if python is not None else default_lmms_python()
    if not has_lmms_eval(python):
        raise LmmsEvalError(f"lmms-eval is not installed in {python}")
    with tempfile.TemporaryDirectory(prefix="interlace-lmms-") as scratch:
        include_path = None
        if any(task == SUITE_GROUP or task.startswith(SUITE_GROUP + "_") for task in tasks):
            include_path = export_suite_for_lmms(Path(scratch) / "suite", n_per_task)
        command = lmms_eval_command(
            model_dir,
            tasks,
            python=python,
            include_path=include_path,
            output_path=output_path if output_path is not None else Path(scratch) / "out",
            **command_kwargs,
        )
        return run_lmms_eval(command, env=env, echo=echo)
