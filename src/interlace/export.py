"""What goes out with a pruned checkpoint: a model card, and an upload to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def model_card(manifest: dict[str, Any]) -> str:
    """A README.md for the output folder: base model, method, ratio, plan, scores, results, usage."""
    config, report = manifest["config"], manifest["report"]
    plan = report["plan"]
    base = config["model"] or "interlace embedded tiny VLM"
    auto = manifest.get("auto_class", "AutoModelForImageTextToText")
    lines = [
        "---",
        "library_name: transformers",
        "tags: [interlace, layer-pruning, pruned]",
        *([f"base_model: {config['model']}"] if config["model"] and "/" in str(config["model"]) and not Path(str(config["model"])).exists() else []),
        "---",
        "",
        f"# {base}, {report['layers_before'] - report['layers_after']} of {report['layers_before']} decoder layers removed",
        "",
        f"Pruned with [interlace](https://arxiv.org/abs/2511.19676) method `{plan['method']}` at ratio {config['ratio']}: "
        f"{report['layers_before']} -> {report['layers_after']} decoder layers. It loads with plain transformers, no custom code.",
        "",
        "## Plan",
        "",
        f"- dropped layers (original indices): {plan['dropped']}",
        f"- finetuned survivors: {plan['finetuned']}",
        f"- frozen anchors: {plan['anchors']}",
        f"- selection path: {plan['path']}",
        "",
    ]
    heal = report.get("heal")
    if heal:
        lines += [
            "## Healing",
            "",
            f"{heal['samples']} samples, {heal['steps']} optimizer steps, {heal['trainable_parameters']:,} trainable parameters, "
            f"lr {config['heal']['lr']}, effective batch {config['heal']['batch_size']}, data `{config['data']}`.",
            "",
        ]
    if report.get("dense") and report.get("pruned"):
        dense, pruned = report["dense"], report["pruned"]
        lines += ["## Results (interlace built-in suite, exact match)", "", "| task | dense | pruned |", "|---|---|---|"]
        lines += [f"| {t} | {dense['tasks'][t]:.3f} | {pruned['tasks'][t]:.3f} |" for t in sorted(dense["tasks"])]
        lines += [f"| **overall** | **{dense['overall']:.3f}** | **{pruned['overall']:.3f}** |", "", f"Retention: {report['retention']:.3f}.", ""]
    scores = manifest.get("scores", {}).get("similarity", {})
    if "1" in scores:
        lines += ["## Layer redundancy", "", "S1 (cos of each layer's input and output): " + ", ".join(f"{v:.3f}" for v in scores["1"]), ""]
    lines += [
        "## Use",
        "",
        "```python",
        f"from transformers import {auto}, AutoProcessor",
        "",
        f'model = {auto}.from_pretrained("PATH_OR_REPO")',
        'processor = AutoProcessor.from_pretrained("PATH_OR_REPO")',
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
