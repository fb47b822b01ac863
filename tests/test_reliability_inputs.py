"""Hostile inputs: data rows that point outside their directory or at devices, hostile YAML, flags
that would fail late, `--json` paths and names the filesystem cannot hold, odd environments, and
the Python API given the wrong types. Each ends in one `error:` line before any work (CLI) or a
TypeError naming the argument (API); bad rows are counted like other bad rows."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from interlace.data import sources
from interlace.data.rows import RowSkipped, SampleRules, resolve_image
from test_cli_errors import assert_clean_failure, run

ROOT = Path(__file__).resolve().parents[1]
TURN = [{"user": "what colour is it ?", "assistant": "red"}]


def run_env(*args, env=None, cwd=None, timeout=300):
    """`interlace ARGS` with extra environment variables (the helper of test_cli_errors sets none)."""
    base = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "80", **(env or {})}
    if os.environ.get("PYTHONPATH"):
        base["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(
        [sys.executable, "-m", "interlace", *args], capture_output=True, text=True, env=base, cwd=cwd,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def assert_nothing_written(out):
    out = Path(out)
    assert not out.exists() and not Path(f"{out}.work").exists() and not Path(f"{out}.tmp").exists()


def write_rows(path: Path, rows: list) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def images(tmp_path):
    """A data directory with one image inside it, and a "secret" image beside the directory."""
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (8, 8), "red").save(data / "inside.png")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "secret.png")
    return data


# --- data paths stay inside the data's directory --------------------------------------------------


def test_rows_naming_images_outside_the_data_directory_are_bad_rows(tmp_path, images):
    rows = [{"images": ["inside.png"], "texts": TURN}] * 8 + [
        {"images": ["../secret.png"], "texts": TURN},
        {"images": [str(tmp_path / "secret.png")], "texts": TURN},
    ]
    path = write_rows(images / "rows.jsonl", rows)
    stream = sources.iter_samples(path, "train", max_bad_fraction=0.5)
    assert len(list(stream)) == 8
    assert stream.stats.skipped == {"outside_image": 2}
    with pytest.raises(sources.DataSpecError, match="--images-anywhere"):
        sources.load_samples(path, "train")  # 2 of 10 rows: more than the 10% allowed
    allowed = sources.iter_samples(path, "train", images_anywhere=True)
    assert len(list(allowed)) == 10 and allowed.stats.skipped == {}


def test_a_symlink_leading_out_of_the_data_directory_is_outside(tmp_path, images):
    (images / "link.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(RowSkipped) as skipped:
        resolve_image("link.png", images)
    assert skipped.value.reason == "outside_image"
    assert resolve_image("link.png", images, anywhere=True) == (tmp_path / "secret.png").read_bytes()


def test_imagefolder_metadata_cannot_name_files_outside(tmp_path, images):
    folder = tmp_path / "folder"
    write_rows(folder / "metadata.jsonl", [{"file_name": "../secret.png", "texts": TURN}] * 3)
    stream = sources.iter_samples(str(folder), "train", max_bad_fraction=1.0)
    with pytest.raises(sources.DataSpecError, match="no usable samples"):
        list(stream)
    assert stream.stats.skipped == {"outside_image": 3}
    # Inside the --data directory is fine: a nested metadata.jsonl may name a sibling folder.
    shutil.copy(images / "inside.png", folder / "shared.png")
    write_rows(folder / "nested" / "metadata.jsonl", [{"file_name": "../shared.png", "texts": TURN}] * 3)
    (folder / "metadata.jsonl").unlink()
    assert len(sources.load_samples(str(folder), "train")) == 3


def test_base64_that_looks_like_an_absolute_path_still_decodes(images):
    """A JPEG's base64 starts with "/9j/": it must not be refused as a path outside the data."""
    import base64
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG")
    text = base64.b64encode(buffer.getvalue()).decode()
    assert text.startswith("/9j/")
    assert resolve_image(text, images) == buffer.getvalue()


def test_long_base64_is_not_resolved_as_a_path(images):
    """Resolving 4 MB of base64 as a path (100k "/"-separated names) took minutes; it is base64."""
    import base64

    data = os.urandom(3_000_000)
    started = time.perf_counter()
    assert resolve_image(base64.b64encode(data).decode(), images) == data
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory"])
def test_images_that_are_not_regular_files_are_refused_without_reading(tmp_path, kind):
    """/dev/zero read without end and a FIFO blocked the run; both are bad rows now, found by stat."""
    target = {"dev-zero": "/dev/zero", "fifo": str(tmp_path / "pipe"), "directory": str(tmp_path)}[kind]
    if kind == "fifo":
        os.mkfifo(target)
    code = (
        "from interlace.data.rows import RowSkipped, resolve_image\n"
        f"try:\n    resolve_image({target!r}, anywhere=True)\nexcept RowSkipped as e:\n    print(e.reason)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "irregular_image", result.stdout + result.stderr


def test_an_image_over_the_size_cap_is_a_bad_row(images):
    rows = [{"images": ["inside.png"], "texts": TURN}] * 2
    path = write_rows(images / "rows.jsonl", rows)
    stream = sources.iter_samples(path, "train", rules=SampleRules(max_image_bytes=16), max_bad_fraction=1.0)
    with pytest.raises(sources.DataSpecError, match="no usable samples"):
        list(stream)
    assert stream.stats.skipped == {"oversized_image": 2}


def test_deeply_nested_jsonl_row_is_a_bad_row(images):
    rows = "".join(json.dumps({"images": ["inside.png"], "texts": TURN}) + "\n" for _ in range(20))
    (images / "rows.jsonl").write_text(rows + "[" * 100_000 + "]" * 100_000 + "\n")
    stream = sources.iter_samples(str(images / "rows.jsonl"), "train")
    assert len(list(stream)) == 20 and stream.stats.skipped == {"malformed": 1}


def test_prune_refuses_rows_outside_the_data_directory(tmp_path, images):
    rows = [{"images": [str(tmp_path / "secret.png")], "texts": TURN}] * 20
    path = write_rows(images / "rows.jsonl", rows)
    out = tmp_path / "out"
    result = run("prune", "--data", path, "--no-heal", "--no-eval", "--out", str(out))
    assert_clean_failure(result, "outside_image", "--images-anywhere")
    assert_nothing_written(out)


@pytest.mark.slow
def test_prune_with_images_anywhere_reads_them(tmp_path, images):
    """--images-anywhere (PruneConfig.images_anywhere) reaches the data loader."""
    rows = [{"images": [str(tmp_path / "secret.png")], "texts": TURN}] * 20
    path = write_rows(images / "rows.jsonl", rows)
    out = tmp_path / "out"
    result = run("prune", "--data", path, "--images-anywhere", "--no-heal", "--no-eval", "--calib-samples", "2", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((out / "interlace_manifest.json").read_text())
    assert manifest["config"]["images_anywhere"] is True


def test_data_that_is_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "rows.jsonl"
    os.mkfifo(fifo)
    assert_clean_failure(run("prune", "--data", str(fifo), "--out", str(tmp_path / "out")), "not a regular file")


# --- YAML ------------------------------------------------------------------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
)


HOSTILE_YAML = [
    ("alias-bomb", BOMB.encode(), "aliases"),
    ("deep", ("ratio: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nests deeper"),
    ("latin-1", "ratio: 0.3\nmethod: 'caf\xe9'\n".encode("latin-1"), "UTF-8"),
    ("5000-digits", ("seed: " + "9" * 5000 + "\n").encode(), "cannot be read"),
    ("4-MB", ("data: '" + "a" * 4_000_000 + "'\n").encode(), "more than a run config's limit"),
]


@pytest.mark.parametrize("name, content, needle", HOSTILE_YAML, ids=[case[0] for case in HOSTILE_YAML])
def test_hostile_yaml_fails_fast_in_one_line(tmp_path, name, content, needle):
    config = tmp_path / f"{name}.yaml"
    config.write_bytes(content)
    started = time.perf_counter()
    result = run("prune", "--config", str(config), "--out", str(tmp_path / "out"))
    assert_clean_failure(result, needle)
    assert time.perf_counter() - started < 60
    assert_nothing_written(tmp_path / "out")


def test_yaml_that_is_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "run.yaml"
    os.mkfifo(fifo)
    assert_clean_failure(run("prune", "--config", str(fifo), "--out", str(tmp_path / "out")), "not a regular file")


def test_error_lines_are_capped(tmp_path):
    """A 400 kB value once made a 400 kB error line; the line keeps its start and says what was cut."""
    config = tmp_path / "run.yaml"
    config.write_text("method: '" + "a" * 400_000 + "'\n")
    result = run("prune", "--config", str(config), "--out", str(tmp_path / "out"))
    assert_clean_failure(result, "--method 'aaaa", "more characters)")
    assert len(result.stdout + result.stderr) < 1000


def test_error_text_is_not_read_as_markup(tmp_path):
    missing = tmp_path / "[red]rows.jsonl"
    assert_clean_failure(run("prune", "--data", str(missing), "--out", str(tmp_path / "out")), "[red]rows.jsonl")


# --- checks before any work -----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["prune", "compare"])
def test_seed_beyond_32_bits(tmp_path, command):
    out = tmp_path / "out"
    assert_clean_failure(run(command, "--seed", str(2**32), "--out", str(out)), "--seed must be >= 0 and <= 4294967295")
    assert_nothing_written(out)


def test_kd_top_k_larger_than_the_vocabulary(tmp_path):
    out = tmp_path / "out"
    result = run("prune", "--heal-loss", "kd", "--kd-top-k", "100000", "--out", str(out))
    assert_clean_failure(result, "--kd-top-k 100000", "vocabulary")
    assert_nothing_written(out)


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--device", "tpu:7"], "not a torch device"),
        (["--device", "cuda:99"], "--device cuda:99"),
        (["--prompt-tokens", "100000000"], "--prompt-tokens must be at most"),
        (["--image-size", "100000x100000"], "--image-size must be at most"),
    ],
    ids=["tpu", "cuda-99", "prompt-tokens", "image-size"],
)
def test_bench_flags_checked_before_loading(flags, needle):
    assert_clean_failure(run("bench", "embedded", *flags), needle)


@pytest.mark.parametrize(
    "command",
    [
        ["prune", "--no-heal", "--no-eval"],
        ["eval"],
        ["compare", "--methods", "interlace"],
        ["sweep", "--ratios", "0.25"],
        ["bench", "embedded", "--fast"],
        ["demo"],
    ],
    ids=lambda command: command[0],
)
def test_json_into_a_missing_directory_fails_before_the_run(tmp_path, command):
    out = tmp_path / "out"
    extra = ["--out", str(out)] if command[0] in ("prune", "compare", "sweep", "demo") else []
    started = time.perf_counter()
    result = run(*command, *extra, "--json", str(tmp_path / "missing" / "r.json"))
    assert_clean_failure(result, "--json", "does not exist")
    assert time.perf_counter() - started < 60  # nothing ran
    assert_nothing_written(out)


@pytest.mark.parametrize("flag", ["--out", "model", "--data", "--json"])
def test_names_longer_than_the_filesystem_allows(tmp_path, flag):
    long = str(tmp_path / ("n" * 300))
    args = {"--out": ["--out", long], "model": [long, "--out", str(tmp_path / "o")],
            "--data": ["--data", long, "--out", str(tmp_path / "o")], "--json": ["--json", long, "--out", str(tmp_path / "o")]}[flag]  # fmt: skip
    assert_clean_failure(run("prune", *args), "File name too long" if flag in ("model", "--data") else "bytes")
    assert_nothing_written(tmp_path / "o")


def test_ascii_terminal_does_not_crash_on_non_ascii_names(tmp_path):
    """Under PYTHONIOENCODING=ascii, a model directory named "modèle" crashed the printing of the results."""
    from interlace.embedded import MODEL_DIR

    model = tmp_path / "modèle"
    model.symlink_to(MODEL_DIR)
    result = run_env("bench", str(model), "--fast", "--image-size", "none", "--repeats", "1", env={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "mod?le" in result.stdout


def test_unwritable_interlace_cache(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_env("eval", "smollm2", env={"INTERLACE_CACHE": str(blocker / "cache")})
    assert_clean_failure(result, "INTERLACE_CACHE", "writable")


# --- the Python API checks its arguments' types ---------------------------------------------------


def test_api_entry_points_name_the_wrong_argument():
    from interlace.calibration import compute_scores
    from interlace.config import HealConfig, validate
    from interlace.heal.loop import heal
    from interlace.loading import load_model
    from interlace.methods import select_layers
    from interlace.pipeline import prune
    from interlace.surgery import remove_layers

    model, processor = load_model(None)
    samples = sources.load_samples("embedded", "calib", 2)
    cases = [
        (lambda: select_layers("interlace", None, 0.25), "scores must be RedundancyScores"),
        (lambda: sources.load_samples(None), "spec must be"),
        (lambda: sources.iter_samples(3), "spec must be"),
        (lambda: validate(None), "config must be a PruneConfig"),
        (lambda: prune({"out": "x"}), "config must be a PruneConfig"),
        (lambda: heal(model, processor, samples, [0], config={"lr": 1e-3}), "config must be a HealConfig"),
        (lambda: heal(processor, model, samples, [0], HealConfig()), "model must be"),
        (lambda: heal(model, processor, "embedded", [0], HealConfig()), "samples must be"),
        (lambda: compute_scores(model, processor, "embedded"), "samples must be"),
        (lambda: remove_layers(model, "12"), "indices must be"),
    ]
    for call, message in cases:
        with pytest.raises(TypeError, match=message):
            call()


# --- the adversarial script -----------------------------------------------------------------------


@pytest.mark.slow
def test_adversarial_script_quick_run(tmp_path):
    """`scripts/adversarial.py --quick` (13 cases, 2 to 4 minutes) runs and reports its totals."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "adversarial.py"), "--quick", "--json", str(report)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stdout + result.stderr
    data = json.loads(report.read_text())
    assert data["tried"] == data["held"] + data["failed"] and data["tried"] >= 10
    assert f"tried {data['tried']}" in result.stdout
    assert all(case["reason"] for case in data["cases"] if not case["held"])
