"""The lmms-eval bridge: command building, results parsing and the exported suite (always), and
real lmms-eval runs on the embedded model (marked `lmms`; `make test` builds .venv-lmms first)."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from interlace.arch import BY_MODEL_TYPE
from interlace.data import vqa
from interlace.embedded import MODEL_DIR
from interlace.evaluation import lmms_eval as harness

ROOT = Path(__file__).resolve().parents[1]
LMMS_PYTHON = ROOT / ".venv-lmms" / "bin" / "python"


def flags(command):
    """``{--flag: value}`` of an argv; bare flags map to True."""
    parsed, rest = {}, command[4:]
    for i, token in enumerate(rest):
        if token.startswith("--"):
            following = rest[i + 1] if i + 1 < len(rest) else "--"
            parsed[token] = True if following.startswith("--") else following
    return parsed


def checkpoint(tmp_path, model_type):
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


# ---------------------------------------------------------------------------------------------
# Command builder and model-type table


def test_command_for_a_llava_checkpoint(tmp_path):
    model_dir = checkpoint(tmp_path, "llava")
    command = harness.lmms_eval_command(
        model_dir, ["interlace_vqa", "mmmu_val"], python="/opt/py", output_path=tmp_path / "out",
        include_path=tmp_path / "suite", limit=7, device="cpu", dtype="float32",
    )  # fmt: skip
    assert command[:4] == ["/opt/py", "-m", "lmms_eval", "eval"]
    assert flags(command) == {
        "--model": "llava_hf",
        "--model_args": f"pretrained={model_dir.resolve()},device_map=cpu,dtype=float32",
        "--tasks": "interlace_vqa,mmmu_val",
        "--batch_size": "1",
        "--limit": "7",
        "--device": "cpu",
        "--output_path": str(tmp_path / "out"),
        "--include_path": str(tmp_path / "suite"),
        "--log_samples": True,
    }


def test_command_leaves_out_what_is_not_asked_for(tmp_path):
    model_dir = checkpoint(tmp_path, "qwen3_vl")
    command = harness.lmms_eval_command(model_dir, ["mme"], device="cuda:1")
    assert command[0] == sys.executable
    assert "--limit" not in command and "--include_path" not in command
    assert flags(command)["--model"] == "qwen3_vl"
    assert flags(command)["--model_args"] == f"pretrained={model_dir.resolve()},device_map=cuda:1"


@pytest.mark.parametrize(
    "model_type, name",
    [("llava", "llava_hf"), ("llava_onevision", "llava_hf"), ("qwen2_vl", "qwen2_vl"), ("qwen2_5_vl", "qwen2_5_vl"),
     ("qwen3_vl", "qwen3_vl"), ("gemma3", "gemma3"), ("internvl", "internvl_hf"), ("mllama", "llama_vision")],
)  # fmt: skip
def test_model_type_mapping(tmp_path, model_type, name):
    command = harness.lmms_eval_command(tmp_path, ["mme"], model_type=model_type, device="cpu")
    assert flags(command)["--model"] == name


def test_every_mapped_architecture_is_one_interlace_prunes():
    assert set(harness.LMMS_MODEL_TYPES) <= set(BY_MODEL_TYPE)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"model_type": "paligemma"}, "no model class for model_type 'paligemma'; supported: gemma3, internvl"),
        ({"model_type": "qwen2_5_vl", "dtype": "float32"}, "qwen2_5_vl chooses its own dtype"),
        ({"model_type": "llava", "batch_size": 0}, "batch_size must be >= 1"),
        ({"model_type": "llava", "limit": 0}, "limit must be >= 1"),
        ({}, "has no config.json"),
    ],
)
def test_command_errors(tmp_path, kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        harness.lmms_eval_command(tmp_path, ["mme"], device="cpu", **kwargs)


@pytest.mark.parametrize("tasks", [[], [""], ["a,b"]])
def test_command_refuses_bad_task_lists(tmp_path, tasks):
    with pytest.raises(ValueError, match="tasks must be non-empty names"):
        harness.lmms_eval_command(checkpoint(tmp_path, "llava"), tasks, device="cpu")


def test_parse_results_keeps_numbers_and_drops_the_default_filter():
    raw = {
        "results": {
            "grp": {"alias": "grp", "exact_match,none": 0.5, "exact_match_stderr,none": "N/A"},
            "t1": {"alias": " - t1", "exact_match,none": 1.0, "exact_match,strict": 0.25, "acc,none": math.nan},
        },
        "groups": {"grp": {"exact_match,none": 0.5, "n,none": 3}},
        "configs": {"t1": {"ignored": 1.0}},
    }
    assert harness.parse_results(raw) == {"grp": {"exact_match": 0.5, "n": 3.0}, "t1": {"exact_match": 1.0, "exact_match,strict": 0.25}}


# ---------------------------------------------------------------------------------------------
# The exported suite


class _FunctionLoader(yaml.SafeLoader):
    """lmms-eval task YAMLs use a `!function module.name` tag; keep it as a string here."""


_FunctionLoader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


def test_export_writes_the_held_out_questions_and_task_files(tmp_path):
    import datasets

    out = harness.export_suite_for_lmms(tmp_path / "suite", 3, tasks=("count", "digit_sum"))
    samples = vqa.load_split("test", 3, tasks=("count", "digit_sum"))
    data = datasets.load_from_disk(str(out / "data"))
    assert sorted(data) == ["count", "digit_sum"]
    for task in data:
        expected = [s for s in samples if s["source"] == task]
        assert data[task]["question"] == [s["texts"][0]["user"] for s in expected]
        assert data[task]["answer"] == [s["texts"][0]["assistant"] for s in expected]
        assert np.array_equal(np.asarray(data[task][0]["image"]), np.asarray(expected[0]["images"][0]))

    config = yaml.load((out / "interlace_vqa_count.yaml").read_text(), Loader=_FunctionLoader)
    assert config["task"] == "interlace_vqa_count" and config["test_split"] == "count"
    assert Path(config["dataset_path"]) == (out / "data").resolve() and config["dataset_kwargs"] == {"load_from_disk": True}
    assert config["doc_to_text"] == "!function utils.doc_to_text"
    assert config["generation_kwargs"]["max_new_tokens"] == 8 and config["generation_kwargs"]["do_sample"] is False
    group = yaml.safe_load((out / "interlace_vqa.yaml").read_text())
    assert group["task"] == ["interlace_vqa_count", "interlace_vqa_digit_sum"]


def test_exported_hooks_show_the_question_only_and_score_like_the_builtin_harness(tmp_path):
    out = harness.export_suite_for_lmms(tmp_path / "suite", 1, tasks=("compare",))
    spec = importlib.util.spec_from_file_location("suite_utils", out / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)  # runs without interlace: lmms-eval's python may not have it
    doc = {"question": "are there more red thing than cross ?", "answer": "yes", "image": vqa.render((None,) * 16)}
    assert utils.doc_to_text(doc) == doc["question"]
    assert [image.mode for image in utils.doc_to_visual(doc)] == ["RGB"]
    assert utils.process_results(doc, [" Yes. "]) == {"exact_match": 1.0}
    assert utils.process_results(doc, ["no"]) == {"exact_match": 0.0}


def test_export_refuses_unknown_question_types(tmp_path):
    with pytest.raises(ValueError, match="unknown question types \\['colour'\\]"):
        harness.export_suite_for_lmms(tmp_path, 1, tasks=("count", "colour"))


# ---------------------------------------------------------------------------------------------
# CLI input errors (no lmms-eval needed)


def assert_one_line_error(result, *needles):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("flag, value", [("--tasks", "interlace_vqa"), ("--limit", "3"), ("--lmms-python", "/usr/bin/python3")])
def test_lmms_flags_need_the_lmms_harness(cli, flag, value):
    result = CliRunner().invoke(cli, ["eval", flag, value])
    assert_one_line_error(result, f"{flag} applies to --harness lmms-eval only")


def test_unknown_harness(cli):
    assert_one_line_error(CliRunner().invoke(cli, ["eval", "--harness", "helm"]), "--harness must be builtin or lmms-eval", "helm")


def test_lmms_harness_needs_a_local_checkpoint(cli):
    result = CliRunner().invoke(cli, ["eval", "nobody/some-vlm", "--harness", "lmms-eval"])
    assert_one_line_error(result, "--harness lmms-eval needs a local checkpoint directory, got nobody/some-vlm")


def test_lmms_harness_refuses_an_architecture_lmms_eval_lacks(cli, tmp_path):
    result = CliRunner().invoke(cli, ["eval", str(checkpoint(tmp_path, "idefics3")), "--harness", "lmms-eval"])
    assert_one_line_error(result, "no model class for model_type 'idefics3'; supported: gemma3")


def test_python_without_lmms_eval(cli):
    # The main venv never has lmms-eval (its torchvision would not import beside the CPU torch).
    result = CliRunner().invoke(cli, ["eval", "--harness", "lmms-eval", "--lmms-python", sys.executable])
    assert_one_line_error(result, f"lmms-eval is not installed in {sys.executable}; run `make lmms-setup` or pass --lmms-python")


# ---------------------------------------------------------------------------------------------
# Real lmms-eval runs


@pytest.fixture(scope="module")
def lmms_python():
    if not harness.has_lmms_eval(LMMS_PYTHON):
        message = f"lmms-eval is not installed in {LMMS_PYTHON}; run `make lmms-setup`"
        if os.environ.get("CI"):  # `make test` builds it first: in CI a missing one is a failure
            pytest.fail(message)
        pytest.skip(message)
    return LMMS_PYTHON


@pytest.mark.lmms
def test_mapped_names_exist_in_lmms_eval_and_dtype_support_matches(lmms_python):
    probe = (
        "import inspect, json; from lmms_eval.models import get_model\n"
        f"names = {sorted({m.name for m in harness.LMMS_MODEL_TYPES.values()})!r}\n"
        "print(json.dumps({n: 'dtype' in inspect.signature(get_model(n).__init__).parameters for n in names}))"
    )
    done = subprocess.run([str(lmms_python), "-c", probe], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    takes_dtype = json.loads(done.stdout.splitlines()[-1])
    assert takes_dtype == {m.name: m.takes_dtype for m in harness.LMMS_MODEL_TYPES.values()}


@pytest.fixture(scope="module")
def builtin_result():
    """interlace's own evaluation of the embedded model on the questions the lmms tests export."""
    from interlace.evaluation.generate import evaluate
    from interlace.loading import load_model

    model, processor = load_model(None, device="cpu")
    return evaluate(model, processor, vqa.load_split("test", 5), progress=False)


@pytest.mark.lmms
@pytest.mark.slow
def test_cli_lmms_eval_accuracy_equals_builtin(cli, tmp_path, lmms_python, builtin_result):
    out = tmp_path / "lmms.json"
    args = ["eval", "--harness", "lmms-eval", "--n-per-task", "5", "--threads", "1", "--lmms-python", str(lmms_python), "--json", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output[-3000:]
    lmms = json.loads(out.read_text())
    assert lmms["interlace_vqa"]["exact_match"] == pytest.approx(builtin_result.overall)
    for task, accuracy in builtin_result.tasks.items():
        assert lmms[harness.suite_task_name(task)]["exact_match"] == pytest.approx(accuracy), task


@pytest.mark.lmms
@pytest.mark.slow
def test_lmms_eval_answers_equal_builtin_answers(tmp_path, lmms_python, builtin_result):
    harness.evaluate_with_lmms(
        MODEL_DIR, n_per_task=5, python=lmms_python, output_path=tmp_path, device="cpu", dtype="float32", env={"OMP_NUM_THREADS": "1"}
    )
    samples = vqa.load_split("test", 5)
    for task in vqa.TASKS:
        (log,) = tmp_path.rglob(f"*_samples_{harness.suite_task_name(task)}.jsonl")
        rows = sorted((json.loads(line) for line in log.read_text().splitlines()), key=lambda row: row["doc_id"])
        expected = [(s["texts"][0]["user"], p) for s, p in zip(samples, builtin_result.predictions) if s["source"] == task]
        assert [(row["input"], row["filtered_resps"].strip()) for row in rows] == expected, task
