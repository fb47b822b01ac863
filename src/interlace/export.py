"""What goes out with a pruned checkpoint: a model card, and an upload to the Hugging Face Hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def hub_id(model: str | None) -> str | None:
    """The Hub id of the source model (a zoo model's original included), for ``base_model``; None
    for a local checkpoint of unknown origin and for the embedded model."""
    from interlace import zoo

    if model in (None, "embedded"):
        return None
    if model in zoo.REAL_MODELS and not Path(model).exists():
        return zoo.REAL_MODELS[model].hub_id
    path = Path(model).expanduser()
    if not path.exists():
        return model
    source = path / "interlace_source.json"  # a converted zoo checkpoint names its original
    return json.loads(source.read_text()).get("hub_id") if source.is_file() else None


def model_name(model: str | None) -> str:
    """How a card names the source model: its Hub id, else the directory name of a local
    checkpoint (never the machine's path), or the embedded model."""
    if model in (None, "embedded"):
        return "interlace embedded tiny VLM"
    return hub_id(model) or Path(model).expanduser().resolve().name


def healed_layers(report: dict[str, Any]) -> list[int]:
    """The decoder layers (dense indices) that healing trained; [] when it did not run."""
    return report["plan"]["finetuned"] if report.get("heal") else []


def data_description(spec: str) -> str:
    """The ``--data`` spec as the user gave it, with what it is."""
    from interlace.data import realtext

    if spec.startswith("embedded"):
        return f"`{spec}` (interlace's built-in synthetic visual-QA suite)"
    if spec == realtext.NAME:
        return f"`{spec}` (prose of the Python documentation, split by document; interlace.data.realtext)"
    if Path(spec).expanduser().exists():
        return f"`{spec}` (the user's local data, not published with this model)"
    return f"`{spec}`"


def _results(report: dict[str, Any]) -> list[str]:
    """The card's results: the suite, what retention means, dense and pruned side by side."""
    from interlace.evaluation.suites import TEXT, VQA, format_retention

    dense, pruned = report["dense"], report["pruned"]
    text = report.get("suite") == "text"
    suite = TEXT if text else VQA
    column = "pruned + healed" if report.get("heal") else "pruned, not healed"
    counts = dense.get("counts") or {}
    if text:
        heading = "## Results (held-out real text: the pydocs test split, documents never used to calibrate or heal)"
        intro = [
            f"Perplexity over {dense['tokens']:,} tokens of {dense.get('passages', '?')} held-out passages; two tasks built from "
            "them: `continuation` (pick the true next sentence among 4, chance 0.25) and `cloze` (the last word of a sentence, "
            "exact match). Items per task: " + ", ".join(f"{task} {n}" for task, n in sorted(counts.items())) + ".",
        ]
    else:
        heading = "## Results (interlace built-in visual-QA suite, greedy decoding, exact match)"
        intro = ["Items per task: " + ", ".join(f"{task} {n}" for task, n in sorted(counts.items())) + "."] if counts else []
    lines = [heading, "", *intro, "", f"| | dense | {column} |", "|---|---|---|"]
    if text:
        lines.append(f"| **perplexity** (lower is better) | **{dense['perplexity']:.3f}** | **{pruned['perplexity']:.3f}** |")
    lines += [f"| {t} | {dense['tasks'][t]:.3f} | {pruned['tasks'].get(t, float('nan')):.3f} |" for t in sorted(dense["tasks"])]
    label = "tasks, mean accuracy" if text else "overall accuracy"
    lines += [f"| {label} | {dense['overall']:.3f} | {pruned['overall']:.3f} |", ""]
    lines += [f"Retention: {format_retention(report.get('retention'))}, defined as {suite.definition()}.", ""]
    return lines


def model_card(manifest: dict[str, Any]) -> str:
    """A README.md for the output folder: base model, method, what was trained, results, usage.

    Every statement follows the run's record: a run without healing says so and lists no trained
    layers; a text model's results are its perplexity and text tasks, not an accuracy suite.
    """
    config, report = manifest["config"], manifest["report"]
    plan = report["plan"]
    base = model_name(config["model"])
    base_id = hub_id(config["model"])
    auto = manifest.get("auto_class", "AutoModelForImageTextToText")
    removed = report["layers_before"] - report["layers_after"]
    healed = healed_layers(report)
    heal_config = config.get("heal") or {}
    lines = [
        "---",
        "library_name: transformers",
        "tags: [interlace, layer-pruning, pruned]",
        *([f"base_model: {base_id}"] if base_id else []),
        "---",
        "",
        f"# {base}, {removed} of {report['layers_before']} decoder layers removed" + ("" if report.get("heal") else " (not healed)"),
        "",
        f"Pruned with [interlace](https://arxiv.org/abs/2511.19676) method `{plan['method']}` at ratio {config['ratio']}: "
        f"{report['layers_before']} -> {report['layers_after']} decoder layers"
        + (f", then {len(healed)} surviving layer(s) trained to heal the cut." if healed else ", without healing: no weight was trained.")
        + " It loads with plain transformers, no custom code.",
        "",
        "## Plan",
        "",
        f"- removed layers (original indices): {plan['dropped']}",
        f"- trained layers (original indices): {healed}" if healed else "- trained layers: none (`--no-heal`)",
        *([f"- frozen anchors: {plan['anchors']}"] if plan["anchors"] else []),
        f"- selection path: {plan['path']}",
        f"- data: {data_description(config['data'])}",
        "",
    ]
    heal = report.get("heal")
    if heal:
        what = "LoRA adapters on the linear layers of" if heal_config.get("method") == "lora" else "Every parameter of"
        head = " and the output head" if heal_config.get("train_lm_head") else ""
        lines += [
            "## Healing",
            "",
            f"{what} layers {healed}{head} trained on {heal['samples']} samples in {heal['steps']} optimizer steps "
            f"({heal['trainable_parameters']:,} trainable parameters), lr {heal_config.get('lr')}"
            f"{f' ({lr_source})' if (lr_source := manifest.get('heal_lr')) else ''}, effective batch "
            f"{heal_config.get('batch_size')}, loss {heal_config.get('loss', 'ce')}; the rest of the model stayed frozen.",
            "",
        ]
        if heal.get("losses"):
            lines += [f"Training loss: {heal['losses'][0]:.4f} at the first step, {heal['losses'][-1]:.4f} at the last.", ""]
    if report.get("dense") and report.get("pruned"):
        lines += _results(report)
    scores = manifest.get("scores", {}).get("similarity", {})
    if "1" in scores:
        lines += ["## Layer redundancy", "", "S1 (cos of each layer's input and output): " + ", ".join(f"{v:.3f}" for v in scores["1"]), ""]
    loader = "AutoProcessor" if auto == "AutoModelForImageTextToText" else "AutoTokenizer"
    lines += [
        "## Use",
        "",
        "```python",
        f"from transformers import {auto}, {loader}",
        "",
        f'model = {auto}.from_pretrained("PATH_OR_REPO")',
        f'{"processor" if loader == "AutoProcessor" else "tokenizer"} = {loader}.from_pretrained("PATH_OR_REPO")',
        "```",
        "",
        "The original index of every remaining layer is in the config as `interlace_kept_layers`;",
        "`interlace_manifest.json` holds the full run record (config, scores, plan, curve, versions).",
        "",
        "## Citation",
        "",
        "Madinei et al., *INTERLACE: Interleaved Layer Pruning and Efficient Adaptation in Large "
        "Vision-Language Models*, CVPR 2026, arXiv:2511.19676.",
        "",
    ]
    return "\n".join(lines)


def push_to_hub(folder: str | Path, repo_id: str, private: bool = True, token: str | None = None) -> str:
    """Upload a verified output folder to the Hub with huggingface_hub's upload API.

    Returns:
        The URL of the commit.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="Upload interlace-pruned model")
    return str(getattr(info, "commit_url", info))
