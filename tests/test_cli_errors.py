"""Bad input to the real CLI: exit 2, one `error:` line that names the problem, no traceback, and
no output directory created or touched (issue 7)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from interlace.data import vqa


def run(*args, cwd=None):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "interlace", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


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


@pytest.mark.parametrize(
    "ratio, needle",
    [("0", "--ratio must be between 0 and 1"), ("-0.5", "--ratio must be between 0 and 1"), ("0.05", "removes no layer"), ("0.6", "lower --ratio")],
)
def test_bad_ratio(tmp_path, ratio, needle):
    assert_clean_failure(run("prune", "--ratio", ratio, "--out", str(tmp_path / "out")), needle)
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
