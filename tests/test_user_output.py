"""What a user reads: run summaries and model cards that say what ran, progress lines in a log,
`interlace eval --data` on rows of the user's own, retention where the reference is 0, healing
defaults by model size, and help that is not cut at 80 columns without a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from interlace.cli.app import _summary_table
from interlace.compare import markdown_table, plot_comparison
from interlace.config import PAPER_LR, SMALL_MODEL_LR, default_heal, heal_lr, lr_note
from interlace.console import console
from interlace.evaluation.suites import TEXT, VQA, format_retention, retention
from interlace.export import model_card, model_name
from interlace.lm_loss import labelled_ce_sum
from interlace.pipeline import PruneReport
from test_text_models import ROWS, SMOLLM2_TEMPLATE, tiny_checkpoint
from tiny_models import dense_model

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m interlace ...` with stdout to a pipe: no terminal, as under nohup or in CI."""
    environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH", "FORCE_COLOR")}
    environment.update(HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "interlace", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=environment, cwd=cwd, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _render(table) -> str:
    with console.capture() as captured:
        console.print(table)
    return captured.get()


def _flat(text: str) -> str:
    """Rendered text as one line: rich wraps titles and cells and draws boxes around help."""
    return " ".join(text.replace("│", " ").split())


# ---------------------------------------------------------------------------------------------
# Summaries and cards say what ran


@pytest.fixture(scope="module")
def not_healed(tmp_path_factory):
    """`interlace prune --method shortgpt --no-heal --quiet` on the embedded model, through the CLI."""
    out = tmp_path_factory.mktemp("runs") / "shortgpt"
    args = ("--method", "shortgpt", "--no-heal", "--calib-samples", "16", "--eval-samples-per-task", "5", "--quiet")
    result = _run("prune", *args, "--out", str(out))
    assert result.returncode == 0, result.stdout
    return out, result.stdout


def test_no_heal_run_never_claims_healing(not_healed):
    out, stdout = not_healed
    assert "finetune" not in stdout and "pruned + healed" not in stdout and "before / after" not in stdout
    assert "no layer trained (--no-heal)" in stdout  # the select line
    assert "interlace shortgpt: 12 -> 9 decoder layers, not healed" in stdout and "pruned (no healing)" in stdout
    card = (out / "README.md").read_text()
    assert "finetuned" not in card and "trained layers: none (`--no-heal`)" in card and "## Healing" not in card
    assert "(not healed)" in card.splitlines()[card.splitlines().index("---", 1) + 2]  # the heading
    assert "pruned, not healed" in card and "Retention: " in card and "pruned accuracy / dense accuracy" in card


def test_quiet_prints_stages_and_results_but_no_progress(not_healed):
    _, stdout = not_healed
    assert "calibrating" not in stdout and "questions" not in stdout  # the calibration and evaluation lines
    assert "analyze done in" in stdout and "saved and verified" in stdout


def _text_manifest(model: str, healed: bool, data: str = "pydocs") -> dict:
    dense = {"overall": 0.5, "tasks": {"cloze": 0.4, "continuation": 0.6}, "n": 200, "counts": {"cloze": 100, "continuation": 100},
             "perplexity": 12.0, "tokens": 40000, "passages": 100}
    pruned = {**dense, "overall": 0.3, "tasks": {"cloze": 0.2, "continuation": 0.4}, "perplexity": 20.0}
    plan = {"method": "shortgpt", "dropped": [5, 6], "finetuned": [7], "anchors": [], "path": "shortgpt"}
    heal = {"samples": 64, "steps": 8, "trainable_parameters": 1234567, "losses": [3.2, 2.9]} if healed else None
    report = {"layers_before": 30, "layers_after": 28, "plan": plan, "dense": dense, "pruned": pruned, "retention": 0.6,
              "suite": "text", "heal": heal}
    config = {"model": model, "ratio": 0.07, "data": data, "heal": {"lr": 3e-4, "batch_size": 8, "loss": "ce", "method": "full"}}
    return {"config": config, "report": report, "auto_class": "AutoModelForCausalLM"}


def test_text_model_card_shows_perplexity_the_definition_and_the_counts(tmp_path):
    source = tmp_path / "somewhere" / "my-model"
    source.mkdir(parents=True)
    card = model_card(_text_manifest(str(source), healed=True, data="rows.jsonl"))
    assert str(tmp_path) not in card and card.splitlines()[5].startswith("# my-model, 2 of 30 decoder layers removed")
    assert "| **perplexity** (lower is better) | **12.000** | **20.000** |" in card
    assert "Retention: 0.600, defined as dense perplexity / pruned perplexity" in card
    assert "Items per task: cloze 100, continuation 100" in card and "exact match)" not in card.split("## Results")[1].splitlines()[0]
    assert "trained layers (original indices): [7]" in card and "data: `rows.jsonl`" in card and "pruned + healed" in card
    assert "base_model" not in card  # a local directory of unknown origin


def test_cards_name_zoo_and_hub_models_by_their_hub_id():
    assert model_name("smollm2") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert model_name("Qwen/Qwen3-VL-8B-Instruct") == "Qwen/Qwen3-VL-8B-Instruct"
    card = model_card(_text_manifest("smollm2", healed=False))
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "(not healed)" in card


def test_summary_table_of_a_healed_text_run():
    manifest = _text_manifest("smollm2", healed=True)
    report = PruneReport(out=Path("x"), **{k: v for k, v in manifest["report"].items()})
    text = _flat(_render(_summary_table(report)))
    assert "interlace shortgpt: 30 -> 28 decoder layers, healed: trained layers [7]" in text and "pruned + healed" in text
    assert "cloze (n=100)" in text and "retention (dense ppl / pruned ppl)" in text and "tasks (mean accuracy)" in text


# ---------------------------------------------------------------------------------------------
# Retention where the reference is 0


def test_retention_of_a_zero_reference_is_undefined_not_a_crash(tmp_path):
    assert retention(0.0, 0.4) is None and retention(0.5, 0.4) == 0.8 and retention(20.0, 25.0, lower_is_better=True) == 0.8
    assert VQA.retention({"overall": 0.0}, {"overall": 0.2}) is None and format_retention(None) == "n/a"
    assert TEXT.retention({"perplexity": 10.0}, {"perplexity": float("inf")}) is None
    zero = {"overall": 0.0, "tasks": {"count": 0.0}}
    entry = {"overall": 0.1, "tasks": {"count": 0.1}, "retention": None, "retention_vs_dense_ft": None, "layers_removed": 2,
             "dropped": [1, 2], "healed": True, "speedup": None}
    report = {"model": "embedded", "ratio": 0.25, "num_layers": 8, "suite": "vqa", "dense": zero, "dense_ft": zero,
              "methods": {"interlace": entry}}
    table = markdown_table(report)
    assert table.count("n/a") == 4  # dense vs Dense-FT, Dense-FT vs dense, and the method's two
    plot_comparison(report, tmp_path / "compare.png")
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"
    manifest = _text_manifest("smollm2", healed=False)
    manifest["report"]["retention"] = None
    assert "Retention: n/a" in model_card(manifest)


# ---------------------------------------------------------------------------------------------
# Progress in a log


def test_heal_prints_a_line_per_step_without_a_terminal(tmp_path):
    args = ("prune", "--method", "shortgpt", "--calib-samples", "16", "--train-samples", "64", "--batch-size", "16", "--no-eval")
    result = _run(*args, "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout
    steps = [line for line in result.stdout.splitlines() if line.strip().startswith("heal step")]
    assert [line.split()[2].rstrip(",") for line in steps] == ["1/4", "2/4", "3/4", "4/4"], result.stdout
    assert all("loss " in line and "tokens/s" in line for line in steps)
    assert "ETA" in steps[0] and "took" in steps[-1]
    assert "calibrating 16/16 samples" in result.stdout


# ---------------------------------------------------------------------------------------------
# interlace eval --data


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("llama"), "llama", SMOLLM2_TEMPLATE)


def test_eval_data_scores_plain_text_rows(cli, text_model, tmp_path, monkeypatch):
    # The console's width is fixed when it is made; pytest-xdist workers run with COLUMNS=80, where
    # rich would wrap this table's title.
    monkeypatch.setattr(console, "width", 200)
    sentences = ["the quick brown fox jumps over the lazy dog and it was a sunny day in paris.",
                 "rome is a big city and the capital of italy and it was sunny.",
                 "berlin is the capital of germany and a big city by a river."]  # fmt: skip
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": " ".join(sentences[(i + k) % 3] for k in range(6))}) + "\n" for i in range(6)))
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(cli, ["eval", str(text_model), "--data", str(rows), "--json", str(out), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["passages"] == 6 and data["tokens"] > 100 and data["perplexity"] > 1
    assert data["n"] == sum(data["counts"].values()) and set(data["counts"]) == set(data["tasks"])
    assert f"--data {rows} (6 rows)" in _flat(result.output) and "cloze (n=" in result.output


def test_eval_data_scores_chat_rows_per_source(cli, text_model, tmp_path):
    rows = tmp_path / "chat.jsonl"
    rows.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(cli, ["eval", str(text_model), "--data", str(rows), "--json", str(out), "--n-per-task", "3"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["counts"] == {"geo": 3} and data["n"] == 3 and data["tokens"] > 0 and set(data["tasks"]) == {"geo"}


def test_eval_help_says_what_each_model_kind_is_scored_on(cli):
    text = CliRunner().invoke(cli, ["eval", "--help"]).output
    assert "visual-QA" in text and "perplexity" in text and "--data" in text


# ---------------------------------------------------------------------------------------------
# Memory that does not grow with the vocabulary


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_labelled_loss_equals_the_full_logits_loss_in_small_chunks(family):
    model = dense_model(family).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    labels, mask = ids.clone(), torch.ones_like(ids)
    labels[0, :3] = -100
    labels[1, 7:], mask[1, 7:] = -100, 0
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum")
    chunk_of_3 = 3 * 4 * model.config.vocab_size  # 3 positions of fp32 logits at a time
    loss, count = labelled_ce_sum(model, {"input_ids": ids, "attention_mask": mask}, labels, max_logit_bytes=chunk_of_3)
    assert count == 12 and loss == pytest.approx(expected.item(), rel=1e-5)
    assert not hasattr(model.get_output_embeddings(), "__dict__") or "forward" not in vars(model.get_output_embeddings())


# ---------------------------------------------------------------------------------------------
# Healing defaults by model size


def test_default_learning_rate_follows_model_size(text_model):
    assert heal_lr(135_000_000) == SMALL_MODEL_LR == 3e-4 and heal_lr(8_000_000_000) == PAPER_LR == 1e-5 and heal_lr(None) == PAPER_LR
    assert default_heal(str(text_model)).lr == SMALL_MODEL_LR
    assert default_heal(str(text_model), given={"lr": 1e-5}).lr == 1e-5  # the paper's value, one flag away
    assert default_heal(None).lr == 1e-3  # the embedded model keeps its own
    assert lr_note(str(text_model), 3e-4).startswith("default for ") and lr_note(str(text_model), 1e-5) == "given (the paper's)"


def test_lr_help_states_the_rule(cli):
    text = _flat(CliRunner().invoke(cli, ["prune", "--help"], env={"COLUMNS": "200"}).output)
    assert "3e-4 under 1B parameters" in text and "--lr 1e-5" in text


# ---------------------------------------------------------------------------------------------
# Help without a terminal


def test_help_without_a_terminal_is_not_cut_at_80_columns():
    result = _run("prune", "--help")
    assert result.returncode == 0
    assert max(len(line) for line in result.stdout.splitlines()) == 120  # rich's fallback was 80
    assert "Print no progress bars or progress lines, only the stages and the results." in _flat(result.stdout)


def test_bench_cpu_run_memory_counts_what_each_run_allocates():
    import ctypes

    from interlace.speed.bench import _memory_probe

    method, start = _memory_probe(torch.device("cpu"))
    if method.startswith("unavailable"):
        pytest.fail(f"this test needs Linux /proc/self/clear_refs: {method}")
    libc = ctypes.CDLL("libc.so.6")
    # The state of a process after a few large frees (glibc raises both thresholds by itself then,
    # but not deterministically): 1 MiB blocks come from the heap, and freed ones stay there.
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 * 2**20)
    libc.mallopt(m_trim_threshold, 2**30)
    try:

        def run() -> float:
            stop = start()
            blocks = [torch.ones(2**18) for _ in range(40)]  # 40 x 1 MiB
            del blocks
            return stop() / 2**20

        sizes = [run() for _ in range(3)]
    finally:
        libc.mallopt(m_mmap_threshold, 128 * 2**10)  # glibc's defaults
        libc.mallopt(m_trim_threshold, 128 * 2**10)
    assert all(size >= 30 for size in sizes), sizes  # was [40, 0, 0]: later runs reused the freed heap
