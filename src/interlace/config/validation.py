"""Whether a run can start, checked before any weights load or anything is written, and the
defaults that depend on the model.

``validate`` is the one check of a run: `interlace prune` runs it on its PruneConfig, `compare`
and `sweep` on the run they share (with their methods or ratios, and ``report=True``), and the
Python API (``pipeline.prune``, ``compare.compare``, ``sweep.Session``) runs it as the CLI does.
``eval_problems`` checks what `interlace eval` takes. Each check returns its problems, every one
with its fix, and a run's problems are reported together. ``default_heal`` is the one place the
healing defaults are decided: the embedded model's, or by model size.

This module imports neither torch nor transformers at load time (a check imports what it needs
when it runs), so the CLI can read it before it sets torch's threads.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interlace import run_dir
from interlace.config.options import (
    DTYPES,
    EMBEDDED_HEAL,
    EMBEDDED_TRAIN_SAMPLES,
    PAPER_LR,
    SMALL_MODEL_LR,
    ConfigError,
    HealConfig,
    PruneConfig,
    config_json,
    fit_micro_batch,
    heal_lr,
    is_embedded,
)


def parameter_count(model: str | None) -> int | None:
    """The parameters of ``model`` (tied ones once) from its config, built on the meta device (no
    weights read); None where the config cannot be read (an unreachable Hub id: validation says why)."""
    from interlace.loading import ModelNotFoundError, read_config, resolve

    try:
        config = read_config(resolve(model), model)
        import torch

        from interlace.loading import model_class

        with torch.device("meta"):
            skeleton = model_class(config).from_config(config)
    except (ModelNotFoundError, OSError, ValueError, TypeError, ImportError, RuntimeError):
        return None
    return sum(p.numel() for p in skeleton.parameters())


def lr_note(model: str | None, lr: float) -> str:
    """Where a run's learning rate came from, for the manifest and the model card."""
    if is_embedded(model):
        return "the embedded model's default" if lr == EMBEDDED_HEAL["lr"] else "given"
    parameters = parameter_count(model)
    if lr != heal_lr(parameters):
        return "given" + (" (the paper's)" if lr == PAPER_LR else "")
    if parameters is None:
        return "default: the paper's (model size unknown)"
    size = f"{parameters / 1e6:.0f}M" if parameters < 10**9 else f"{parameters / 1e9:.1f}B"
    return f"default for {size} parameters: {SMALL_MODEL_LR} under 1B, else the paper's {PAPER_LR}"


def default_heal(model: str | None, seed: int = 0, given: dict[str, Any] | None = None) -> HealConfig:
    """Healing options for ``model``: the paper's, scaled for the embedded model, then ``given``.

    The one place the defaults are decided. The learning rate: the embedded model's 1e-3; else
    by size (``heal_lr``): 3e-4 under a billion parameters, the paper's 1e-5 from there up (and
    for a model whose size cannot be read). ``--lr 1e-5`` gives the paper's value to any model.

    When ``given`` sets batch_size but not micro_batch_size, the micro-batch becomes the largest
    that divides it (48 with the embedded 32 gives 24) instead of an error.

    Raises:
        ValueError: an option out of its range (HealConfig's message).
    """
    given = given or {}
    by_size = {} if is_embedded(model) or "lr" in given else {"lr": heal_lr(parameter_count(model))}
    values = {**(EMBEDDED_HEAL if is_embedded(model) else by_size), "seed": seed, **given}
    if "micro_batch_size" not in given and isinstance(values.get("batch_size", 32), int) and values.get("batch_size", 32) >= 1:
        values["micro_batch_size"] = fit_micro_batch(values.get("batch_size", 32), values.get("micro_batch_size", 4))
    return HealConfig(**values)


def train_sample_count(config: PruneConfig) -> int | None:
    """Healing samples: the flag, else 2048 from the endless embedded stream, else all rows."""
    if config.train_samples is not None:
        return config.train_samples
    return EMBEDDED_TRAIN_SAMPLES if config.data.startswith("embedded") else None


def with_model_defaults(config: PruneConfig) -> PruneConfig:
    """``config`` with the defaults that depend on the model filled in, as a copy (the caller's
    object is left as it is); ``config`` itself when there is nothing to fill.

    ``data`` None becomes the model's default data (``interlace.evaluation.suites.default_data``): the
    visual-QA suite for the embedded model and other VLMs, pydocs for a text-only model. The API
    resolves it here, once, so ``PruneConfig(model="smollm2")`` in Python runs what
    ``interlace prune smollm2`` runs (tests/test_config.py).
    """
    if config.data is not None:
        return config
    from interlace.evaluation.suites import default_data

    return dataclasses.replace(config, data=default_data(config.model))


def validate(
    config: PruneConfig,
    *,
    methods: Sequence[str] | None = None,
    ratios: Sequence[float] | None = None,
    ratio_flag: str = "--ratio",
    report: bool = False,
) -> None:
    """Check a run cheaply and report every problem in one line.

    Runs before any weights load or anything is written: the inputs (``input_problems``: the
    model's config and weight headers, each method at each ratio, the protected layers, the data's
    spec and first rows, the sample counts, what healing will need) and the output directory.

    Args:
        config: the run; data None is resolved from the model first (``with_model_defaults``).
        methods: the methods the run selects with (compare: several, each optionally with
            "-ft"); default: ``config.method``.
        ratios: the ratios it prunes at (sweep: several); default: ``config.ratio``.
        ratio_flag: how messages name the ratios' flag (sweep: "--ratios value").
        report: ``config.out`` is the report directory `compare` or `sweep` writes (a directory,
            or a path to create), and a held-out suite must score every row; default: the
            checkpoint directory of `prune` (``interlace.run_dir`` rules, ``--resume`` against
            the saved options, ``--push-to-hub``).

    Raises:
        TypeError: config is not a PruneConfig.
        ConfigError: listing every problem found, each with its fix.
    """
    if not isinstance(config, PruneConfig):
        raise TypeError(f"config must be a PruneConfig (interlace.config), got {type(config).__name__}")
    config = with_model_defaults(config)
    problems = input_problems(config, methods, ratios, ratio_flag, scored=report)
    problems += report_dir_problems(config.out) if report else _checkpoint_problems(config)
    if problems:
        raise ConfigError("; ".join(dict.fromkeys(problems)))  # the same rule broken by two methods is said once


def input_problems(
    config: PruneConfig,
    methods: Sequence[str] | None = None,
    ratios: Sequence[float] | None = None,
    ratio_flag: str = "--ratio",
    scored: bool = False,
) -> list[str]:
    """What ``validate`` checks of a run's inputs: everything but the output directory (the
    arguments are ``validate``'s). ``scored``: a held-out suite must score the model on the data
    (compare and sweep score every row; prune skips the evaluation where none applies).

    Returns:
        Every problem found, in the order found; empty when the inputs are fine.
    """
    from interlace.methods import METHODS

    config = with_model_defaults(config)
    methods = [config.method] if methods is None else list(methods)
    ratios = [config.ratio] if ratios is None else list(ratios)
    problems, num_layers, vision = _model_problems(config.model, prunable=True)
    problems += method_problems(methods, ratios, num_layers, ratio_flag)
    problems += protect_problems(config.protect, methods, ratios, num_layers)
    problems += _data_problems(config, vision, scored)
    problems += count_problems(config.calib_samples, config.train_samples, config.eval_samples_per_task, vision=vision)
    if config.calib_batch_size < 1:
        problems.append(f"calib_batch_size must be >= 1, got {config.calib_batch_size}")
    if not 0 <= config.seed < 2**32:  # numpy's and torch's seeds are unsigned 32-bit integers
        problems.append(f"--seed must be >= 0 and <= {2**32 - 1}, got {config.seed}")
    if config.deepstack not in ("realign", "protect"):
        problems.append(f"deepstack must be realign or protect, got {config.deepstack!r}")
    bases = [m.removesuffix("-ft") for m in methods]
    heals = config.do_heal and any(b in METHODS and METHODS[b].kind == "layers" for b in bases)
    if config.dtype not in DTYPES:
        problems.append(f"--dtype {config.dtype!r} is not supported; choose from {', '.join(DTYPES)}")
    elif config.dtype == "float16" and heals:
        problems.append(
            "--dtype float16 cannot heal: AdamW updates float16 weights without an fp32 master copy, "
            "so the loss overflows to NaN; use --dtype bfloat16 or float32, or --no-heal"
        )
    if heals and config.heal is not None and config.heal.method == "lora":
        try:
            import peft  # noqa: F401
        except ImportError:
            problems.append("--heal-method lora needs peft, which is not installed: pip install 'interlace[peft]', or use --heal-method full")
    if heals and num_layers is not None:
        problems += _kd_problems(config)
    return problems


def _model_problems(model: str | None, prunable: bool) -> tuple[list[str], int | None, bool | None]:
    """The model's problems (``loading.check_model``: config and weight headers, no weights load),
    its decoder depth and whether it takes images; None for what could not be read."""
    from interlace.loading import ModelNotFoundError, check_model

    try:
        num_layers, vision = check_model(model, prunable=prunable)
    except ModelNotFoundError as error:
        return [str(error)], None, None
    return [], num_layers, vision


def _data_problems(config: PruneConfig, vision: bool | None, scored: bool) -> list[str]:
    """The data spec, the visual-QA data for a text-only model, more calibration samples than the
    embedded split holds, and (``scored``) a vision-language model on data no suite scores."""
    from interlace.data import sources, vqa

    problems = []
    if scored and vision and not is_embedded(config.model) and not config.data.startswith("embedded"):
        # interlace.evaluation.suites.suite_for: a VLM is scored on the built-in visual-QA suite only
        problems.append(
            f"{config.model} is a vision-language model: its rows are scored on the built-in visual-QA suite (--data embedded), "
            f"not on --data {config.data}; evaluate each checkpoint with `interlace eval --harness lmms-eval` instead"
        )
    try:
        kind = sources.parse_data_spec(config.data).kind
    except ValueError as error:
        return [*problems, str(error)]
    if kind == "embedded" and vision is False:
        problems.append(
            f"--data {config.data} is the visual-QA suite, but {config.model} is a text-only model; "
            "pass --data pydocs (real English text) or a JSONL of text rows"
        )
    reserve = vqa.CALIB_RESERVE * len(vqa.TASKS)
    if kind == "embedded" and config.calib_samples > reserve:
        problems.append(f"--calib-samples {config.calib_samples} is more than the {reserve} of the embedded calibration split; lower it")
    return problems


def _kd_problems(config: PruneConfig) -> list[str]:
    """--kd-top-k larger than the vocabulary would fail in torch.topk after the model loads and heals."""
    heal = config.heal
    if heal is None or heal.loss == "ce" or heal.kd_top_k == 0:
        return []
    from transformers import AutoConfig

    from interlace.loading import resolve

    vocab = getattr(AutoConfig.from_pretrained(resolve(config.model)).get_text_config(decoder=True), "vocab_size", None)
    if isinstance(vocab, int) and heal.kd_top_k > vocab:
        return [f"--kd-top-k {heal.kd_top_k} is larger than the model's vocabulary of {vocab} tokens; pass at most {vocab}, or 0 for all"]
    return []


def _checkpoint_problems(config: PruneConfig) -> list[str]:
    """What forbids writing prune's checkpoint to ``config.out`` (README, "Reliability";
    ``interlace.run_dir``), what ``--resume`` finds saved there, and what ``--push-to-hub`` needs."""
    too_long = path_problems(config.out, "--out") or path_problems(f"{config.out}.work", "--out")
    if too_long:  # the checks below would fail on such a path with ENAMETOOLONG
        return too_long
    problems = run_dir.out_problems(config.out, overwrite=config.overwrite, resume=config.resume, model=config.model, data=config.data)
    if config.resume and not problems:
        problems += _resume_problems(config, run_dir.run_dirs(config.out).work)
    if config.push_to_hub is not None:
        problems += _hub_problems(config.push_to_hub)
    return problems


def report_dir_problems(out: str | Path) -> list[str]:
    """A report directory (compare's, sweep's) that is a file or too long a name."""
    if too_long := path_problems(out, "--out"):
        return too_long
    if Path(out).exists() and not Path(out).is_dir():
        return [f"--out {out} is a file; pass a directory path"]
    return []


def eval_problems(model: str | None, n_per_task: int | None, data: str | None = None) -> list[str]:
    """What `interlace eval` checks before loading: the model (any causal LM; config and weight
    headers), the ``--data`` spec, and ``--n-per-task`` against what scores the model
    (``eval_count_problems``: the visual-QA suite's limit for a VLM on it, none for a text model
    or rows of one's own)."""
    from interlace.data import sources

    problems, _, vision = _model_problems(model, prunable=False)
    own_rows = False
    if data is not None:
        try:
            own_rows = sources.parse_data_spec(data).kind not in ("embedded", "text")
        except ValueError as error:  # DataSpecError included
            problems.append(f"--data {data}: {str(error).splitlines()[0]}")
    return problems + eval_count_problems(n_per_task, vision and not own_rows, "--n-per-task")


def method_problems(methods: list[str], ratios: list[float], num_layers: int | None, ratio_flag: str = "--ratio") -> list[str]:
    """Unknown methods (a "-ft" suffix allowed), and each ratio out of (0, 1) or, for a method that
    removes layers, one whose K drops do not fit its shape in ``num_layers`` (when known)."""
    from interlace.methods import METHODS, budget_problems

    problems = [f"{ratio_flag} must be between 0 and 1 (exclusive), got {r}" for r in ratios if not 0 < r < 1]
    for name in methods:
        base = name.removesuffix("-ft")
        if base not in METHODS:
            problems.append(f"--method {name!r} is unknown; choose from {', '.join(METHODS)}")
        elif num_layers and METHODS[base].kind == "layers":
            for ratio in (r for r in ratios if 0 < r < 1):
                problems += [p.replace("--ratio", ratio_flag, 1) for p in budget_problems(ratio, base, num_layers)]
    return problems


def path_problems(path: str | Path | None, flag: str) -> list[str]:
    """A path the filesystem cannot hold: a name longer than NAME_MAX bytes (255 on ext4, xfs,
    btrfs) or a whole longer than PATH_MAX (4096 on Linux), as that filesystem reports them.
    Such a path otherwise fails with ENAMETOOLONG wherever it is first used, often after the work."""
    if path is None:
        return []
    absolute = Path(path).expanduser().absolute()
    existing = next((p for p in (absolute, *absolute.parents) if _exists(p)), Path("/"))
    name_max, path_max = _pathconf(existing, "PC_NAME_MAX", 255), _pathconf(existing, "PC_PATH_MAX", 4096)
    long = [part for part in absolute.parts if len(os.fsencode(part)) > name_max]
    if long:
        shown = long[0] if len(long[0]) <= 40 else f"{long[0][:40]}..."
        return [f"{flag} holds a name of {len(os.fsencode(long[0]))} bytes ({shown}), more than the {name_max} "
                "the filesystem allows; pass a shorter path"]  # fmt: skip
    if len(os.fsencode(str(absolute))) >= path_max:
        return [f"{flag} is a path of {len(os.fsencode(str(absolute)))} bytes, more than the {path_max} the system allows; pass a shorter path"]
    return []


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # ENAMETOOLONG, EACCES
        return False


def _pathconf(path: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(path, name)
    except (OSError, ValueError):
        return default


def protect_problems(spec: str, methods: list[str], ratios: list[float], num_layers: int | None) -> list[str]:
    """A ``--protect`` spec that does not parse or names layers the model lacks, and each layer
    method whose K drops cannot fit beside the protected layers (when the depth is known)."""
    from interlace.methods import METHODS, budget_problems
    from interlace.methods.protect import parse_protect

    try:
        protected = parse_protect(spec, num_layers)
    except ValueError as error:
        return [str(error)]
    if not protected or not num_layers:
        return []
    problems = []
    for name in (m.removesuffix("-ft") for m in methods):
        for ratio in (r for r in ratios if 0 < r < 1):
            if name in METHODS and not budget_problems(ratio, name, num_layers):  # the shape's own problem is reported once
                problems += [f"{p} (--protect {spec})" for p in budget_problems(ratio, name, num_layers, protected)]
    return problems


def count_problems(calib_samples: int, train_samples: int | None, eval_samples_per_task: int | None, vision: bool | None = True) -> list[str]:
    """The sample counts every command takes: calibration, healing, held-out items per task
    (``eval_count_problems``; ``vision``: whether the model takes images, None if unknown)."""
    problems = []
    if calib_samples < 1:
        problems.append(f"--calib-samples must be >= 1, got {calib_samples}")
    if train_samples is not None and train_samples < 1:
        problems.append(f"--train-samples must be >= 1, got {train_samples}")
    return problems + eval_count_problems(eval_samples_per_task, vision)


def eval_count_problems(n: int | None, vision: bool | None, flag: str = "--eval-samples-per-task") -> list[str]:
    """Held-out items per task: at least 1 and, for a vision-language model (``vision`` True), at
    most what the visual-QA suite's test split holds per task (``vqa.TEST_RESERVE``). A text
    model's suite has no such limit: its tasks take the items its held-out text yields, fewer
    where it yields fewer (``interlace.evaluation.text.evaluate_text``); neither do rows of one's
    own, nor a model that could not be read (None: its own problem is reported)."""
    if n is None:
        return []
    if vision:
        from interlace.data import vqa

        return [] if 1 <= n <= vqa.TEST_RESERVE else [f"{flag} must be in 1..{vqa.TEST_RESERVE}, got {n}"]
    return [] if n >= 1 else [f"{flag} must be >= 1, got {n}"]


def _hub_problems(repo: str) -> list[str]:
    """--push-to-hub runs last: check now what can fail then (the id, offline mode, a token)."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as error:
        return [f"--push-to-hub {repo!r} is not a Hub repo id ({str(error).splitlines()[0]}); write [owner/]name"]
    if constants.HF_HUB_OFFLINE:
        return [f"--push-to-hub {repo} cannot upload with HF_HUB_OFFLINE set; unset it or drop --push-to-hub"]
    if huggingface_hub.get_token() is None:
        return [f"--push-to-hub {repo} needs a Hugging Face token; run `hf auth login` or set HF_TOKEN"]
    return []


# Options a resumed run may change: none of them alters scores, plan or healing (--out may be
# spelled otherwise, through a link: the work directory found is the same).
RESUME_FREE = {"out", "resume", "overwrite", "push_to_hub", "evaluate", "heal.save_every"}


def _resume_problems(config: PruneConfig, work: Path) -> list[str]:
    """--resume continues the saved run: its scores, plan and healing state only fit its options,
    and only as written (``interlace.run_dir.resume_problems``: config, seals, checkpoint)."""
    integrity = run_dir.resume_problems(work)
    if not (work / "config.json").is_file():
        return integrity
    try:
        saved = json.loads((work / "config.json").read_text())
    except (OSError, ValueError):
        saved = None
    heal_config = config.heal or default_heal(config.model, config.seed)
    now = json.loads(json.dumps(config_json(config, heal_config), default=str))
    if not isinstance(saved, dict) or set(saved) != set(now) or not isinstance(saved.get("heal"), dict):
        return [f"--resume: {work / 'config.json'} is not the config of a run of this interlace version; {run_dir.START_OVER}"]
    flat = lambda c: {**{k: v for k, v in c.items() if k != "heal"}, **{f"heal.{k}": v for k, v in (c.get("heal") or {}).items()}}  # noqa: E731
    before, after = flat(saved), flat(now)
    changed = [f"{k} {before.get(k)!r} -> {after[k]!r}" for k in after if k not in RESUME_FREE and before.get(k) != after[k]]
    if not changed:
        return integrity
    return [
        f"--resume: {work} was started with other options ({', '.join(changed)}); "
        "rerun with its options, or pass --overwrite instead of --resume to start over",
        *integrity,
    ]
