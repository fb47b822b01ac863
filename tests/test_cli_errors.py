"""Bad input to the real CLI: exit 2, one `error:` line that names the problem, no traceback, and
no output directory created or touched; types, ranges, environment and failure states."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interlace.data import vqa


def run(*args, cwd=None, pythonpath=None):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "80"}
    paths = [str(p) for p in (pythonpath, os.environ.get("PYTHONPATH")) if p]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return subprocess.run(
        [sys.executable, "-m", "interlace", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300, stdin=subprocess.DEVNULL
    )


def assert_clean_failure(result, *needles):
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def jsonl_with(tmp_path):
    def write(rows, name="data.jsonl"):
        path = tmp_path / name
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return str(path)

    return write


def image_row(tmp_path, texts):
    sample = vqa.load_split("calib", 1)[0]
    sample["images"][0].save(tmp_path / "img.png")
    return {"images": ["img.png"], "texts": texts, "source": "t"}


def test_missing_model_path(tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run("prune", str(tmp_path / "no-such-model"), "--out", str(out)), "no-such-model", "does not exist")
    assert not out.exists()


def test_unreachable_hub_id(tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run("prune", "nobody/no-such-model", "--out", str(out)), "nobody/no-such-model")
    assert not out.exists()


def test_unsupported_architecture(tmp_path):
    from transformers import T5Config

    model_dir = tmp_path / "t5"
    T5Config(num_layers=2, d_model=32, num_heads=2, d_ff=64).save_pretrained(model_dir)
    assert_clean_failure(run("prune", str(model_dir), "--out", str(tmp_path / "out")), "'t5'", "qwen3_vl", "llava")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("via", ["argument", "config"])
def test_text_model_defaults_to_real_text(tmp_path, via):
    """A text-only model with no --data gets pydocs, whether named as the argument or in --config
    (the argument's source once read as 'default', and the run failed on the visual-QA suite)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    model_dir = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(num_hidden_layers=4, hidden_size=32, intermediate_size=64, num_attention_heads=2, vocab_size=64)).save_pretrained(model_dir)
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {model_dir}\n")
    given = [str(model_dir)] if via == "argument" else ["--config", str(config)]
    result = run("prune", *given, "--calib-samples", "0", "--out", str(tmp_path / "out"))
    assert_clean_failure(result, "--calib-samples must be >= 1")
    assert "visual-QA" not in result.stdout + result.stderr


def test_model_argument_wins_over_config(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {tmp_path / 'not-this-one'}\n")
    result = run("prune", str(tmp_path / "this-one"), "--config", str(config), "--out", str(tmp_path / "out"))
    assert_clean_failure(result, "this-one")
    assert "not-this-one" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "ratio, needle",
    [("0", "--ratio must be between 0 and 1"), ("-0.5", "--ratio must be between 0 and 1"), ("0.05", "removes no layer"), ("0.6", "lower --ratio")],
)
def test_bad_ratio(tmp_path, ratio, needle):
    assert_clean_failure(run("prune", "--method", "interlace", "--ratio", ratio, "--out", str(tmp_path / "out")), needle)
    assert not (tmp_path / "out").exists()


def test_data_spec_that_does_not_exist(tmp_path):
    assert_clean_failure(run("prune", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "out")), "missing.jsonl", "no such file")


def test_empty_data(tmp_path, jsonl_with):
    path = jsonl_with([])
    assert_clean_failure(run("prune", "--data", path, "--out", str(tmp_path / "out")), "data.jsonl", "empty")


def test_rows_without_images_or_texts(tmp_path, jsonl_with):
    path = jsonl_with([{"picture": "a.png", "conversation": "hi"}])
    assert_clean_failure(run("prune", "--data", path, "--out", str(tmp_path / "out")), "data.jsonl", "images")


def test_rows_without_assistant_turns(tmp_path, jsonl_with):
    path = jsonl_with([image_row(tmp_path, [{"user": "what is here ?"}])])
    assert_clean_failure(run("prune", "--data", path, "--out", str(tmp_path / "out")), "data.jsonl", "assistant")


def test_non_empty_output_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert_clean_failure(run("prune", "--out", str(out)), "--out", "--overwrite")
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"
    assert not Path(f"{out}.work").exists() and not Path(f"{out}.tmp").exists()


def test_unknown_yaml_keys(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("ratio: 0.25\nratoi: 0.3\nheal:\n  lr: 0.001\n  warmup: 3\n")
    assert_clean_failure(run("prune", "--config", str(config), "--out", str(tmp_path / "out")), "ratoi", "warmup", "allowed:")


def test_all_problems_are_reported_together(tmp_path):
    result = run("prune", "--ratio", "0", "--method", "slab", "--data", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "out"))
    assert_clean_failure(result, "--ratio", "slab", "x.jsonl")


def test_resume_without_a_previous_run(tmp_path):
    assert_clean_failure(run("prune", "--resume", "--out", str(tmp_path / "out")), "--resume", ".work")


def assert_nothing_written(out):
    out = Path(out)
    assert not out.exists() and not Path(f"{out}.work").exists() and not Path(f"{out}.tmp").exists()


# --- types, ranges, environment and failure states ------------------------------------------------
# 1. YAML values are checked against their declared types, with the key named.


def test_yaml_values_of_the_wrong_type_are_each_named(tmp_path):
    # test_config.py checks each message; here the real CLI reports them all on one line.
    config = tmp_path / "run.yaml"
    config.write_text(
        "ratio: abc\ncalib_samples: '10'\ntrain_samples: [1]\nmethod: 3\ndtype: 32\ndo_heal: 'no'\n"
        "heal:\n  lr: '1e-3'\n  save_every: -1\n"
    )
    out = tmp_path / "out"
    result = run("prune", "--config", str(config), "--out", str(out), "--threads", "1")
    assert_clean_failure(
        result, "ratio in --config must be a number", "calib_samples in --config must be an integer",
        "train_samples in --config", "method in --config must be a string", "dtype in --config must be a string",
        "do_heal in --config must be true or false", "heal.lr in --config must be a number", "save_every",
    )  # fmt: skip
    assert_nothing_written(out)


def test_yaml_lr_with_an_exponent_is_a_number(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("ratio: 0\nheal:\n  lr: 1e-3\n")  # ratio 0 stops the run in validation
    result = run("prune", "--config", str(config), "--out", str(tmp_path / "out"), "--threads", "1")
    assert_clean_failure(result, "--ratio must be between 0 and 1")
    assert "lr" not in result.stdout + result.stderr


# 2. Healing checks run in validate, before any weights load, all reported at once.


@pytest.mark.parametrize(
    "args, needles",
    [
        (("--batch-size", "48", "--micro-batch-size", "32"), ("batch_size 48", "multiple of micro_batch_size 32", "24")),
        (("--lr", "nan"), ("lr must be", "nan")),
        (("--lr", "1e308"), ("lr must be", "1e+308")),
    ],
)
def test_healing_options_are_checked_before_anything_loads(tmp_path, args, needles):
    out = tmp_path / "out"
    assert_clean_failure(run("prune", *args, "--out", str(out), "--threads", "1"), "healing options", *needles)
    assert_nothing_written(out)


def test_lora_without_peft_is_refused_before_anything_loads(tmp_path):
    shadow = tmp_path / "no_peft" / "peft"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named peft (hidden by the test)')\n")
    out = tmp_path / "out"
    result = run("prune", "--heal-method", "lora", "--out", str(out), "--threads", "1", pythonpath=shadow.parent)
    assert_clean_failure(result, "--heal-method lora needs peft", "pip install", "--heal-method full")
    assert_nothing_written(out)


def test_four_problems_at_once_are_four_problems_reported(tmp_path):
    result = run(
        "prune", "--ratio", "0", "--batch-size", "48", "--micro-batch-size", "32", "--lr", "nan",
        "--save-every", "-1", "--dtype", "nope", "--out", str(tmp_path / "out"), "--threads", "1",
    )  # fmt: skip
    assert_clean_failure(result, "--ratio", "batch_size 48", "lr must be", "save_every", "--dtype 'nope'")


# 3. dtype: the documented set, and no float16 healing.


def test_unknown_dtype_lists_the_allowed_ones(tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run("prune", "--dtype", "nope", "--out", str(out), "--threads", "1"), "--dtype 'nope'", "float32", "bfloat16")
    assert_nothing_written(out)


def test_float16_healing_is_refused_with_the_reason(tmp_path):
    out = tmp_path / "out"
    result = run("prune", "--dtype", "float16", "--out", str(out), "--threads", "1")
    assert_clean_failure(result, "--dtype float16 cannot heal", "fp32 master", "bfloat16", "--no-heal")
    assert_nothing_written(out)


# 4, 5. --threads beyond the cores, a negative --save-every.


def test_more_threads_than_cores(tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run("prune", "--threads", "99999", "--out", str(out)), "--threads", "99999", "cores")
    assert_nothing_written(out)


def test_bench_refuses_more_threads_than_cores():
    assert_clean_failure(run("bench", "embedded", "--fast", "--threads", "99999"), "--threads", "99999", "cores")


def test_negative_save_every(tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run("prune", "--save-every", "-1", "--out", str(out), "--threads", "1"), "save_every", "-1")
    assert_nothing_written(out)


# 6. Non-UTF-8 JSONL rows are malformed rows: skipped and counted; too many of them stop the run.


def _latin1_jsonl(tmp_path, good, bad):
    row = image_row(tmp_path, [{"user": "what is here ?", "assistant": "a cat"}])
    latin1 = json.dumps({**row, "source": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"".join([json.dumps(row).encode() + b"\n"] * good + [latin1 + b"\n"] * bad))
    return path


def test_a_non_utf8_row_is_skipped_and_counted(tmp_path):
    from interlace.data.sources import iter_samples

    stream = iter_samples(str(_latin1_jsonl(tmp_path, good=19, bad=1)), "train")
    assert len(list(stream)) == 19 and stream.stats.bad == 1 and stream.stats.to_json()["skipped"]["malformed"] == 1


def test_mostly_non_utf8_data_fails_naming_the_file_and_leaves_nothing(tmp_path):
    path = _latin1_jsonl(tmp_path, good=1, bad=19)
    out = tmp_path / "out"
    result = run("prune", "--data", str(path), "--no-eval", "--out", str(out), "--threads", "1")
    assert_clean_failure(result, "data.jsonl", "rows are bad", "malformed")
    assert_nothing_written(out)


# 7. Failure states: before healing, nothing is left; during healing, a resumable <out>.work that
# the error line names with how to resume or discard it.

POISON = """
import interlace.heal.loop as heal

calls = {"n": 0}
real = heal.objective


def objective(*args, **kwargs):  # the third forward of healing turns NaN
    calls["n"] += 1
    loss = real(*args, **kwargs)
    return loss * float("nan") if calls["n"] >= 3 else loss


heal.objective = objective
"""


def test_nan_while_healing_keeps_a_resumable_work_dir_and_says_so(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(POISON)
    out = tmp_path / "out"
    args = ["--method", "interlace", "--no-eval", "--calib-samples", "24", "--train-samples", "64",
            "--batch-size", "16", "--micro-batch-size", "16", "--save-every", "1"]
    result = run("prune", *args, "--out", str(out), "--threads", "1", pythonpath=hook)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output
    error = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "step 3/4" in error[0], output
    assert f"{out}.work is kept" in error[0] and "--resume" in error[0] and "step 2" in error[0] and "--overwrite" in error[0]
    assert (tmp_path / "out.work" / "heal" / "latest" / "meta.json").exists()
    assert not out.exists() and not (tmp_path / "out.tmp").exists()
    # the kept run is refused as a fresh start, so that it is never discarded by accident
    assert_clean_failure(run("prune", *args, "--out", str(out), "--threads", "1"), "out.work", "--resume", "--overwrite")


INTERRUPT = """
import importlib

module = importlib.import_module("{module}")


def interrupted(*args, **kwargs):  # Ctrl-C arrives while this stage runs
    raise KeyboardInterrupt


setattr(module, "{name}", interrupted)
"""


@pytest.mark.parametrize(
    "module, name, kept",
    [("interlace.calibration", "compute_scores", False), ("interlace.evaluation.verify", "verify", True)],
    ids=["calibration", "save-verify"],
)
def test_ctrl_c_at_a_stage_leaves_what_the_readme_says(tmp_path, module, name, kept):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(INTERRUPT.format(module=module, name=name))
    out = tmp_path / "out"
    args = ["--no-eval", "--calib-samples", "24", "--train-samples", "32", "--batch-size", "16", "--micro-batch-size", "16"]
    result = run("prune", *args, "--out", str(out), "--threads", "1", pythonpath=hook)
    output = result.stdout + result.stderr
    assert result.returncode == 130 and "Traceback" not in output, output
    line = [line for line in output.splitlines() if line.startswith("interrupted:")]
    assert len(line) == 1, output
    assert not out.exists() and not (tmp_path / "out.tmp").exists()
    assert (tmp_path / "out.work").exists() == kept
    assert (f"{out}.work is kept" in line[0] and "--resume" in line[0]) if kept else "nothing was kept" in line[0]


def test_ctrl_c_during_the_ratio_search_is_one_line_and_writes_nothing(tmp_path):
    """--target-retention probes ratios before prune starts; Ctrl-C there used to end in a
    KeyboardInterrupt traceback."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(INTERRUPT.format(module="interlace.calibration", name="compute_scores"))
    out = tmp_path / "out"
    result = run("prune", "--target-retention", "0.9", "--calib-samples", "24", "--out", str(out), "--threads", "1", pythonpath=hook)
    output = result.stdout + result.stderr
    assert result.returncode == 130 and "Traceback" not in output, output
    line = [line for line in output.splitlines() if line.startswith("interrupted:")]
    assert len(line) == 1 and "ratio search" in line[0], output
    assert not out.exists() and not (tmp_path / "out.work").exists()


SLEB_INTERRUPT = """
from pathlib import Path

from interlace.methods import sleb

real = sleb._loss_sum


def interrupted(*args, **kwargs):  # Ctrl-C once the first removal step is saved
    if Path("{state}").exists():
        raise KeyboardInterrupt
    return real(*args, **kwargs)


sleb._loss_sum = interrupted
"""


@pytest.mark.slow
def test_ctrl_c_during_sleb_keeps_its_finished_steps_and_resume_ends_as_an_uninterrupted_run(tmp_path):
    """SLEB's selection is the one long stage before healing (over an hour for SmolLM2 on a CPU
    core): its finished steps survive Ctrl-C, and --resume goes on from them."""
    hook = tmp_path / "hook"
    hook.mkdir()
    out = tmp_path / "out"
    (hook / "sitecustomize.py").write_text(SLEB_INTERRUPT.format(state=f"{out}.work/select_state.json"))
    args = ["--method", "sleb", "--ratio", "0.25", "--no-heal", "--no-eval", "--calib-samples", "12", "--threads", "1"]
    result = run("prune", *args, "--out", str(out), pythonpath=hook)
    output = result.stdout + result.stderr
    assert result.returncode == 130 and "Traceback" not in output, output
    line = [line for line in output.splitlines() if line.startswith("interrupted:")]
    assert len(line) == 1 and f"{out}.work is kept" in line[0] and "1 finished removal step" in line[0], output
    assert not out.exists() and not (tmp_path / "out.tmp").exists()

    resumed = run("prune", *args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert re.search(r"1 of \d removal steps taken from the interrupted run", resumed.stdout), resumed.stdout
    # stdout is a pipe, where the bar cannot redraw: each step the resumed run took prints a line
    steps = re.findall(r"SLEB removal (\d)/(\d): layer \d+ \(loss [\d.]+\) in \d+s", resumed.stdout + resumed.stderr)
    assert [int(k) for k, _ in steps] == list(range(2, int(steps[0][1]) + 1)), resumed.stdout + resumed.stderr
    fresh = run("prune", *args, "--out", str(tmp_path / "fresh"))
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    plans = [json.loads((tmp_path / name / "interlace_manifest.json").read_text())["report"]["plan"] for name in ("out", "fresh")]
    assert plans[0]["dropped"] == plans[1]["dropped"] and len(plans[0]["dropped"]) >= 2
    assert not (tmp_path / "out.work").exists()


def test_a_leftover_work_dir_is_not_silently_reused(tmp_path):
    (tmp_path / "out.work").mkdir()
    (tmp_path / "out.work" / "config.json").write_text("{}")
    result = run("prune", "--out", str(tmp_path / "out"), "--threads", "1")
    assert_clean_failure(result, "out.work", "unfinished run", "--resume", "--overwrite")
    assert (tmp_path / "out.work" / "config.json").read_text() == "{}"


# 8. consecutive: the block and the K layers it finetunes must fit in the model.


def test_consecutive_block_that_cannot_fit_is_refused_before_calibration(tmp_path):
    out = tmp_path / "out"
    result = run("prune", "--method", "consecutive", "--ratio", "0.6", "--out", str(out), "--threads", "1")
    assert_clean_failure(result, "consecutive", "finetune", "lower --ratio")
    assert_nothing_written(out)


# Further cases of the same kind: other commands, broken checkpoints, shared --out.


@pytest.fixture
def checkpoint(tmp_path):
    """A copy of the embedded model's directory, to break."""
    from interlace.embedded import MODEL_DIR

    def copy(name="model"):
        return Path(shutil.copytree(MODEL_DIR, tmp_path / name))

    return copy


@pytest.mark.parametrize("command", ["prune", "eval", "compare", "sweep", "bench", "cut"])
def test_truncated_safetensors_fail_before_loading(tmp_path, checkpoint, command):
    model = checkpoint()
    with open(model / "model.safetensors", "r+b") as weights:
        weights.truncate(1_000_000)  # a cut-off download
    out = tmp_path / "out"
    args = {
        "eval": [], "bench": ["--fast"], "cut": [str(out), "--drop", "3"],
    }.get(command, ["--out", str(out)])
    result = run(command, str(model), *args, *(["--threads", "1"] if command != "cut" else []))
    assert_clean_failure(result, "model.safetensors is not a readable safetensors file", "re-download")
    assert_nothing_written(out)


def test_a_checkpoint_without_weights(tmp_path, checkpoint):
    model = checkpoint()
    (model / "model.safetensors").unlink()
    assert_clean_failure(run("prune", str(model), "--out", str(tmp_path / "out"), "--threads", "1"), "no weights")


def test_remote_code_is_refused_without_a_prompt(tmp_path, checkpoint):
    model = checkpoint()
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="my_custom_vlm", auto_map={"AutoConfig": "configuration_x.XConfig"})
    (model / "config.json").write_text(json.dumps(config))
    result = run("prune", str(model), "--out", str(tmp_path / "out"), "--threads", "1")
    assert_clean_failure(result, "auto_map", "runs no remote code", "interlace archs")
    assert_nothing_written(tmp_path / "out")


def test_an_out_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_clean_failure(run("prune", "--out", str(blocker / "out"), "--threads", "1"), "--out", "not a writable directory")


def test_a_push_to_hub_that_cannot_work_fails_before_the_run(tmp_path):
    result = run("prune", "--push-to-hub", "bad repo!!", "--out", str(tmp_path / "out"), "--threads", "1")
    assert_clean_failure(result, "--push-to-hub 'bad repo!!' is not a Hub repo id")
    result = run("prune", "--push-to-hub", "me/pruned", "--out", str(tmp_path / "out"), "--threads", "1")
    assert_clean_failure(result, "HF_HUB_OFFLINE")  # run() sets it


def test_negative_seed(tmp_path):
    assert_clean_failure(run("prune", "--seed", "-1", "--out", str(tmp_path / "out"), "--threads", "1"), "--seed must be >= 0")


def test_resume_with_other_options_is_refused(tmp_path):
    from interlace.config import config_json, resolve_config

    out = tmp_path / "out"
    saved = resolve_config({}, {"out": out, "ratio": 0.25})
    (tmp_path / "out.work").mkdir()
    (tmp_path / "out.work" / "config.json").write_text(json.dumps(config_json(saved, saved.heal)))
    result = run("prune", "--resume", "--ratio", "0.3", "--out", str(out), "--threads", "1", "--no-eval", "--calib-samples", "8", "--train-samples", "32")
    assert_clean_failure(result, "--resume", "ratio 0.25 -> 0.3", "--overwrite")


def test_a_ratio_search_is_validated_before_it_starts(tmp_path):
    # a regression: --target-retention ran its search (a load, calibration, heals) before validate()
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run("prune", "--target-retention", "0.9", "--out", str(out), "--threads", "1")
    assert_clean_failure(result, "--out", "--overwrite")
    assert "searching" not in result.stdout and (out / "keep.txt").read_text() == "mine"


def test_two_runs_on_one_out(tmp_path):
    out, work = tmp_path / "out", tmp_path / "out.work"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "interlace", "prune", "--out", str(out), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (work / "config.json").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert (work / "config.json").exists(), first.communicate()[0]
        assert_clean_failure(run("prune", "--out", str(out), "--threads", "1"), "out.work", "still running", "--resume")
        for flag in ("--overwrite", "--resume"):  # neither may touch the state of a live run
            assert_clean_failure(run("prune", flag, "--out", str(out), "--threads", "1"), "another run is using")
        assert first.poll() is None and (work / "config.json").exists()
    finally:
        first.send_signal(signal.SIGTERM)  # before healing: it cleans up like Ctrl-C
        output = first.communicate(timeout=120)[0]
    assert first.returncode == 130 and "Traceback" not in output, output
    assert "before healing started; nothing was kept" in output
    assert_nothing_written(out)


def test_compare_and_sweep_check_their_inputs_at_once(tmp_path):
    (tmp_path / "report").write_text("")
    result = run("compare", "--methods", "consecutive,shortgpt", "--ratio", "0.6", "--calib-samples", "0", "--out", str(tmp_path / "report"))
    assert_clean_failure(result, "asks consecutive", "--calib-samples must be >= 1", "is a file")
    result = run("sweep", "--method", "slab", "--train-samples", "0", "--out", str(tmp_path / "sweep"))
    assert_clean_failure(result, "--method 'slab'", "--train-samples must be >= 1")
    result = run("sweep", "--method", "interlace", "--ratios", "0.1,0.9", "--out", str(tmp_path / "sweep"))
    assert_clean_failure(result, "--ratios value 0.9", "lower --ratio")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("methods, message", [
    ("interlace-ft", "interlace heals by definition; use interlace"),
    ("auto-ft", "auto heals by definition; use auto"),
    ("wanda-2:4-ft", "wanda-2:4 removes no layer, so nothing heals; use wanda-2:4"),
    ("shortgpt,angular,shortgpt", "shortgpt named twice"),
])
def test_compare_refuses_a_row_that_would_repeat_another(tmp_path, methods, message):
    result = run("compare", "--methods", methods, "--out", str(tmp_path / "report"))
    assert_clean_failure(result, message)
    assert not (tmp_path / "report").exists()


def test_generated_healing_flag_is_validated(tmp_path):
    """A healing field exposed by the generated flags (not hand-written before) is range-checked."""
    out = tmp_path / "out"
    assert_clean_failure(run("prune", "--warmup-ratio", "2", "--out", str(out)), "warmup_ratio", "[0, 1)")
    assert not out.exists()
