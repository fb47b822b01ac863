"""What `--out`, `--overwrite` and `--resume` may touch, resume state that runs no code and is
checked before it is trusted, and full or read-only disks at save time.

Each test is one cause: the destructive ones (`--out .`, an --out that is or holds the model or the
data, `--overwrite` of somebody's directory, a symbolic link as --out), a crafted or damaged
`<out>.work` under `--resume`, a write that fails for lack of space or permission, and Ctrl-C in a
sweep. The real CLI runs in a subprocess on the embedded model with tiny budgets; failures are
injected with a `sitecustomize` hook, as in test_cli_errors.py.
"""

import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from interlace import run_dir
from interlace.embedded import MODEL_DIR
from interlace.heal import state as heal_state
from test_cli_errors import POISON, assert_clean_failure, run

TINY = ["--method", "interlace", "--no-eval", "--calib-samples", "8", "--batch-size", "16", "--micro-batch-size", "16", "--threads", "1"]
TWO_STEPS, FOUR_STEPS = ["--train-samples", "32"], ["--train-samples", "64"]


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes: what must come through a refused run unchanged."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def hook(tmp_path: Path, code: str) -> Path:
    folder = tmp_path / "hook"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(code)
    return folder


def one_error_line(result, code: int) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == code and "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    return lines[0]


# --- 1. --out may not replace the current directory, the model or the data ----------------------


@pytest.mark.parametrize("command", ["demo", "prune"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_out_dot_never_deletes_the_current_directory(tmp_path, command, overwrite):
    """`cd DIR && interlace demo --out .` deleted everything in DIR."""
    (tmp_path / "thesis.tex").write_text("three years of work")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.csv").write_text("1,2\n")
    before = tree(tmp_path)
    args = ["--out", ".", *(["--overwrite"] if overwrite else []), "--threads", "1"]
    assert_clean_failure(run(command, *args, cwd=tmp_path), "--out .", "the current directory")
    assert tree(tmp_path) == before


def test_out_dot_in_an_empty_directory_is_refused_before_any_work(tmp_path):
    """`prune --out .` in an empty directory used to delete its own finished result."""
    assert_clean_failure(run("prune", "--out", ".", *TINY, *TWO_STEPS, cwd=tmp_path), "the current directory")
    assert list(tmp_path.iterdir()) == []


def test_out_that_contains_the_current_directory(tmp_path):
    inner = tmp_path / "project"
    inner.mkdir()
    result = run("prune", "--out", str(tmp_path), "--overwrite", *TINY, *TWO_STEPS, cwd=inner)
    assert_clean_failure(result, "contains the current directory")
    assert inner.exists()


@pytest.fixture
def model_copy(tmp_path):
    return Path(shutil.copytree(MODEL_DIR, tmp_path / "parent" / "model"))


def test_out_that_is_the_model_never_replaces_it(tmp_path, model_copy):
    """`prune M --out M --overwrite` replaced the source model with the pruned one."""
    before = tree(model_copy)
    result = run("prune", str(model_copy), "--out", str(model_copy), "--overwrite", *TINY, *TWO_STEPS, cwd=tmp_path)
    assert_clean_failure(result, "is the model's directory")
    assert tree(model_copy) == before


def test_out_that_holds_the_model_is_never_deleted(tmp_path, model_copy):
    """`prune P/model --out P --overwrite` deleted P with the model in it."""
    parent = model_copy.parent
    before = tree(parent)
    result = run("prune", str(model_copy), "--out", str(parent), "--overwrite", *TINY, *TWO_STEPS, cwd=tmp_path)
    assert_clean_failure(result, "contains the model's directory")
    assert tree(parent) == before


def test_out_inside_the_model_is_refused(tmp_path, model_copy):
    result = run("prune", str(model_copy), "--out", str(model_copy / "pruned"), *TINY, *TWO_STEPS, cwd=tmp_path)
    assert_clean_failure(result, "lies inside the model's directory")
    assert not (model_copy / "pruned").exists() and not (model_copy / "pruned.work").exists()


def imagefolder(tmp_path: Path) -> Path:
    from interlace.data import vqa

    folder = tmp_path / "images"
    folder.mkdir()
    rows = []
    for i, sample in enumerate(vqa.load_split("calib", 12)):
        sample["images"][0].save(folder / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "texts": sample["texts"]})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    # the same rows as a JSONL data file beside the images it names
    rows = [{"images": [row["file_name"]], "texts": row["texts"]} for row in rows]
    (folder / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_out_inside_the_data_directory_is_refused(tmp_path):
    """A result written into an imagefolder would be read as data by the next run."""
    data = imagefolder(tmp_path)
    before = tree(data)
    result = run("prune", "--data", str(data), "--out", str(data / "pruned"), *TINY, *TWO_STEPS, cwd=tmp_path)
    assert_clean_failure(result, "lies inside the --data directory")
    assert tree(data) == before


def test_out_that_holds_the_data_file_is_refused(tmp_path):
    """The data file (and the images it names, which lie under its directory) is never replaced."""
    data = imagefolder(tmp_path)
    before = tree(data)
    result = run("prune", "--data", str(data / "data.jsonl"), "--out", str(data), "--overwrite", *TINY, *TWO_STEPS, cwd=tmp_path)
    assert_clean_failure(result, "is the directory of the --data file")
    assert tree(data) == before


# --- --overwrite replaces only an earlier interlace result -------------------------------------


def test_overwrite_refuses_a_directory_that_is_not_an_interlace_result(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8 precious")
    result = run("prune", "--out", str(out), "--overwrite", *TINY, *TWO_STEPS, cwd=tmp_path)
    assert_clean_failure(result, "not an interlace result", "interlace_manifest.json", "--overwrite never replaces")
    assert tree(out) == {"holiday.jpg": b"\xff\xd8 precious"}
    assert not Path(f"{out}.work").exists()


@pytest.mark.parametrize("content", ["user files", "an earlier result"])
def test_demo_does_not_overwrite_a_non_empty_out(tmp_path, content):
    """`demo` hard-coded overwrite=True: now it asks like `prune`."""
    out = tmp_path / "demo"
    out.mkdir()
    (out / ("notes.txt" if content == "user files" else run_dir.MANIFEST)).write_text("{}")
    before = tree(out)
    assert_clean_failure(run("demo", "--out", str(out), cwd=tmp_path), "--out", "--overwrite")
    assert tree(out) == before


@pytest.mark.parametrize("name", ["mine.txt", "config.json"])
def test_a_leftover_work_dir_that_is_not_interlace_state_is_never_deleted(tmp_path, name):
    """`<out>.work` is discarded by --overwrite only when a run made it (its .lock): a model
    directory that happens to be named so holds a config.json too."""
    work = tmp_path / "out.work"
    work.mkdir()
    (work / name).write_text("{}")
    result = run("prune", "--out", str(tmp_path / "out"), "--overwrite", *TINY, *TWO_STEPS, cwd=tmp_path)
    assert_clean_failure(result, "out.work", "not an interlace run's state")
    assert tree(work) == {name: b"{}"}


@pytest.mark.slow
def test_out_through_a_symbolic_link_and_overwrite_of_an_earlier_result(tmp_path):
    """--out as a link ran the whole job, then failed in rmtree; --overwrite through it replaces
    the earlier result in the directory the link names, and the link stays a link."""
    real = tmp_path / "disk" / "result"
    real.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    args = [*TINY, *TWO_STEPS, "--no-heal", "--ratio", "0.25"]
    first = run("prune", "--out", str(link), *args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert link.is_symlink() and run_dir.is_result(real)
    stamp = (real / run_dir.MANIFEST).read_text()
    assert_clean_failure(run("prune", "--out", str(link), *args, cwd=tmp_path), "holds an earlier interlace result", "--overwrite")
    again = run("prune", "--out", str(link), *args, "--method", "shortgpt", "--overwrite", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert link.is_symlink() and (real / run_dir.MANIFEST).read_text() != stamp
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["result"]  # no .work, no old copy


def test_replacing_a_result_keeps_the_old_one_until_the_new_one_is_in(tmp_path, monkeypatch):
    """A crash between the renames of the final swap leaves both copies on disk, never neither."""
    old, new, aside = tmp_path / "out", tmp_path / "new", tmp_path / "aside"
    for folder, text in ((old, "old"), (new, "new")):
        folder.mkdir()
        (folder / run_dir.MANIFEST).write_text(text)
    real_rename = Path.rename

    def crash_on_the_second(self, target):
        if self == new:
            raise KeyboardInterrupt  # killed between the two renames
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", crash_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        run_dir.replace_dir(new, old, aside)
    assert (aside / run_dir.MANIFEST).read_text() == "old" and (new / run_dir.MANIFEST).read_text() == "new"
    monkeypatch.undo()
    shutil.rmtree(aside)
    run_dir.replace_dir(new, old, aside)
    assert (old / run_dir.MANIFEST).read_text() == "new" and not new.exists() and not aside.exists()


# --- 2. --resume runs no code from files and trusts only what the run wrote ----------------------


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """The `<out>.work` of a run whose loss turned NaN at healing step 3 of 4, with a checkpoint
    of step 2 (config, scores, plan, heal/latest); each test tampers with a copy of it."""
    tmp_path = tmp_path_factory.mktemp("interrupted")
    out = tmp_path / "out"
    result = run("prune", *TINY, *FOUR_STEPS, "--save-every", "1", "--out", str(out), pythonpath=hook(tmp_path, POISON))
    assert "step 3/4" in one_error_line(result, 1)
    assert heal_state.checkpoint_problem(tmp_path / "out.work" / "heal") is None
    return tmp_path / "out.work"


@pytest.fixture
def work(interrupted, tmp_path):
    """A copy of the interrupted run's state, as <tmp_path>/out.work."""
    return Path(shutil.copytree(interrupted, tmp_path / "out.work"))


def resume(tmp_path: Path, *extra: str):
    return run("prune", *TINY, *FOUR_STEPS, "--save-every", "1", "--out", str(tmp_path / "out"), "--resume", *extra, cwd=tmp_path)


class RunsCode:
    """A pickle that runs code when loaded: it writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_state_file_is_never_executed(tmp_path, work):
    """--resume unpickled heal/latest/state.pt with torch.load(weights_only=False)."""
    marker = tmp_path / "pwned"
    latest = work / "heal" / "latest"
    for name in ("state.pt", heal_state.TENSORS, heal_state.SKELETON):
        with open(latest / name, "wb") as handle:
            pickle.dump({"step": 2, "payload": RunsCode(marker)}, handle)
    line = one_error_line(resume(tmp_path), 2)
    assert "heal" in line and "--overwrite" in line, line
    assert not marker.exists(), "the crafted checkpoint ran code"
    with pytest.raises(heal_state.CheckpointError):
        heal_state.load_checkpoint(work / "heal")
    assert not marker.exists()


def test_resume_without_the_saved_config_refuses_other_options(tmp_path, work):
    """With config.json deleted, --resume accepted --ratio 0.34 --method shortgpt: the manifest
    claimed them while the old plan was used."""
    (work / "config.json").unlink()
    line = one_error_line(resume(tmp_path, "--ratio", "0.34", "--method", "shortgpt"), 2)
    assert "config.json" in line and "--overwrite" in line, line
    assert not (tmp_path / "out").exists()


def test_an_edited_plan_is_refused(tmp_path, work):
    plan = json.loads((work / "plan.json").read_text())
    plan["dropped"] = plan["dropped"][:-1]
    (work / "plan.json").write_text(json.dumps(plan, indent=2))
    line = one_error_line(resume(tmp_path), 2)
    assert "plan.json was changed" in line and "--overwrite" in line, line


def test_garbage_scores_are_refused(tmp_path, work):
    (work / "scores.json").write_text("{not json")
    line = one_error_line(resume(tmp_path), 2)
    assert "scores.json was changed" in line and "--overwrite" in line, line


def test_a_truncated_state_file_is_refused(tmp_path, work):
    state = work / "heal" / "latest" / heal_state.TENSORS
    with open(state, "r+b") as handle:
        handle.truncate(state.stat().st_size // 2)
    line = one_error_line(resume(tmp_path), 2)
    assert "damaged" in line and heal_state.TENSORS in line and "--overwrite" in line, line


def test_a_checkpoint_of_another_run_is_refused(tmp_path, work):
    """A checkpoint carries the run (config and plan) it was written for."""
    other = work / "heal" / heal_state.RUN
    other.write_text(json.dumps({"run": "another"}))
    with pytest.raises(heal_state.CheckpointError, match="another run"):
        heal_state.load_checkpoint(work / "heal")
    meta = work / "heal" / "latest" / heal_state.META
    record = json.loads(meta.read_text())
    meta.write_text(json.dumps({**record, "run": "another"}))
    line = one_error_line(resume(tmp_path), 2)
    assert "belongs to another run" in line, line


@pytest.mark.slow
def test_an_untouched_work_dir_resumes_from_its_checkpoint(tmp_path, work):
    result = resume(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((tmp_path / "out" / run_dir.MANIFEST).read_text())
    assert manifest["report"]["heal"]["resumed_from_step"] == 2
    assert not work.exists()


def test_checkpoint_state_round_trips_exactly(tmp_path):
    """Tensors (any dtype, 0-d), tuples, integer keys and NaN come back as saved: a resumed run
    must end with the weights of an uninterrupted one (tests/test_resume.py)."""
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5)
    model(torch.ones(1, 3, dtype=torch.bfloat16)).sum().backward()
    optimizer.step()
    scheduler.step()
    state = heal_state.snapshot(1, model, optimizer, scheduler, losses=[2.5, float("nan")], lrs=[5e-4], skipped=0, config={"seed": 0})
    heal_state.save_checkpoint(state, tmp_path)
    back = heal_state.load_checkpoint(tmp_path)
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)  # a tuple again
    assert set(back["optimizer"]["state"]) == {0, 1}  # integer keys again
    assert back["trainable"]["weight"].dtype == torch.bfloat16 and torch.equal(back["trainable"]["weight"], model.weight)
    assert torch.equal(back["rng"], state["rng"]) and back["losses"][0] == 2.5 and back["losses"][1] != back["losses"][1]
    assert back["scheduler"] == state["scheduler"]
    assert sorted(p.name for p in (tmp_path / "latest").iterdir()) == ["meta.json", "state.json", "state.safetensors"]


# --- 3. A full or read-only disk at save time: one error line, nothing half-written --------------

FULL_DISK = """
import errno
from pathlib import Path

from safetensors import SafetensorError

import {module} as target

real = target.{name}
calls = {{"n": 0}}


def full(tensors, filename, *args, **kwargs):  # as safetensors 0.8 fails on a full disk
    calls["n"] += 1
    if calls["n"] < {fail_at}:
        return real(tensors, filename, *args, **kwargs)
    Path(filename).write_bytes(b"\\0" * 4096)  # what was written before the disk filled up
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


target.{name} = full
"""


def test_a_full_disk_while_saving_the_result(tmp_path):
    out = tmp_path / "out"
    code = FULL_DISK.format(module="transformers.modeling_utils", name="safe_save_file", fail_at=1)
    result = run("prune", *TINY, *TWO_STEPS, "--out", str(out), pythonpath=hook(tmp_path, code), cwd=tmp_path)
    line = one_error_line(result, 1)
    assert "cannot write the result" in line and "No space left on device" in line, line
    assert not out.exists()
    # healing had finished: its state is kept for --resume, but the half-written result is gone
    assert not (tmp_path / "out.work" / "result").exists() and "--resume" in line


def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint_and_no_partial_one(tmp_path):
    """The partial latest.tmp/ kept the disk full, so --resume failed too."""
    out = tmp_path / "out"
    code = FULL_DISK.format(module="interlace.heal.state", name="save_file", fail_at=2)
    result = run("prune", *TINY, *FOUR_STEPS, "--save-every", "1", "--out", str(out), pythonpath=hook(tmp_path, code), cwd=tmp_path)
    line = one_error_line(result, 1)
    assert "cannot write the healing checkpoint" in line and "No space left on device" in line and "--resume" in line, line
    heal = tmp_path / "out.work" / "heal"
    assert sorted(p.name for p in heal.iterdir()) == ["latest", "run.json"]
    assert heal_state.checkpoint_problem(heal) is None and heal_state.load_checkpoint(heal)["step"] == 1
    assert not out.exists()


@pytest.fixture
def read_only(monkeypatch):
    """Make ``folder`` refuse new files: chmod where that binds, else (root ignores modes) fail
    the creation of the cut's temporary directory there as a read-only filesystem would."""

    def apply(folder: Path) -> None:
        if os.geteuid() != 0:
            folder.chmod(0o555)
            return
        import tempfile

        real = tempfile.mkdtemp

        def refused(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == folder:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkdtemp", refused)

    return apply


def test_cut_into_a_read_only_directory(tmp_path, cli, read_only):
    from typer.testing import CliRunner

    target = tmp_path / "ro"
    target.mkdir()
    read_only(target)
    result = CliRunner().invoke(cli, ["cut", str(MODEL_DIR), str(target / "cut"), "--drop", "3"])
    target.chmod(0o755)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot write") and "nothing was written" in lines[0], result.output
    assert list(target.iterdir()) == []


def test_cut_onto_a_full_disk_leaves_nothing(tmp_path, cli, monkeypatch):
    from typer.testing import CliRunner

    from interlace import cut

    def full(path, *args):
        Path(path).write_bytes(b"\0" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cut, "_write_streaming", full)
    result = CliRunner().invoke(cli, ["cut", str(MODEL_DIR), str(tmp_path / "new" / "cut"), "--drop", "3"])
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # neither the partial copy nor the parent it made


def test_cut_that_fails_verification_leaves_no_output(tmp_path, cli, monkeypatch):
    """It exited 2 and left the unverified checkpoint at dst, looking usable."""
    from typer.testing import CliRunner

    from interlace.evaluation import verify

    def fails(path, *args, **kwargs):
        raise verify.VerificationError("logits of the reloaded model differ by 0.253")

    monkeypatch.setattr(verify, "verify", fails)
    result = CliRunner().invoke(cli, ["cut", str(MODEL_DIR), str(tmp_path / "cut"), "--drop", "3"])
    assert result.exit_code == 1, result.output
    assert "failed verification" in result.output and "was not written" in result.output
    assert list(tmp_path.iterdir()) == []


# --- 4. Ctrl-C in a sweep ------------------------------------------------------------------------

SWEEP_INTERRUPT = """
import interlace.heal.loop as heal


def interrupted(*args, **kwargs):  # Ctrl-C while a probe heals: what heal() raises then
    raise heal.HealInterrupted("healing stopped by signal 2 after step 1/2; state saved, rerun with --resume to continue")


heal.heal = interrupted
"""


def test_ctrl_c_in_a_sweep_is_one_line_without_resume_advice(tmp_path):
    """sweep printed a traceback advising --resume, which it does not have."""
    out = tmp_path / "sweep"
    args = ["--ratios", "0.25", "--calib-samples", "8", "--train-samples", "32", "--eval-samples-per-task", "2", "--no-bench"]
    result = run("sweep", *args, "--out", str(out), "--threads", "1", pythonpath=hook(tmp_path, SWEEP_INTERRUPT), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 130 and "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1 and "--resume" not in output and "again" in lines[0], output
    assert not out.exists()
