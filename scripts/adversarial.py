"""Run the real `interlace` CLI on damaged inputs and check that every run keeps the contract.

    python scripts/adversarial.py                 # every case (about 15 minutes on 2 cores)
    python scripts/adversarial.py --quick         # a fast subset (about 2 minutes)
    python scripts/adversarial.py --commands prune,bench --json report.json
    python scripts/adversarial.py --list          # the cases, without running them

Each case is one command (prune, eval, compare, sweep, bench, cut, demo) given one damaged input:
a missing, truncated, garbage or NaN checkpoint, a config or tokenizer that lies, data rows that
point outside their directory or at /dev/zero or a FIFO, hostile YAML, flags out of range, an
`--out` or `--json` that cannot work, an odd environment. It runs in a subprocess, in its own
temporary directory (cwd, HOME, caches), with tiny budgets and a timeout. The contract it checks:

- the exit code is 0 (success), 1 (NaN or failed verification), 2 (bad input) or 130 (interrupt),
  and a case whose input must be refused does not exit 0;
- a failure prints at most one ``error:`` line and no traceback;
- nothing is half-written: no ``*.tmp`` left, no ``--out`` unless the run succeeded;
- nothing else is touched: the shared fixtures (model, data) and a file in the working
  directory are unchanged;
- it finishes within the timeout.

It prints one line per case and the totals (tried / held / failed); each failure's line says why.
Exit status: 0 when every case held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ALLOWED_CODES = (0, 1, 2, 130)
COMMANDS = ("prune", "eval", "compare", "sweep", "bench", "cut", "demo")
PRECIOUS = "precious.txt"  # put in every case's working directory; it must survive the run
# Tiny budgets: enough for each stage to run once on the embedded model.
PRUNE = ["--calib-samples", "4", "--no-eval", "--no-heal"]
HEAL = ["--calib-samples", "4", "--no-eval", "--train-samples", "8", "--batch-size", "4", "--micro-batch-size", "4"]
SMALL = ["--calib-samples", "4", "--train-samples", "8", "--eval-samples-per-task", "2", "--no-bench"]


@dataclass(frozen=True)
class Case:
    """One command run on one damaged input.

    Attributes:
        name: "command/input", unique.
        args: the CLI arguments; ``{fx}`` is the fixtures directory, ``{model}`` the good model,
            ``{out}`` the case's output path, ``{copy}`` a private copy of the good model.
        expect: "refuse" (must exit non-zero), "succeed" (must exit 0) or "clean" (either, cleanly).
        quick: part of the --quick subset.
        env: extra environment variables (formatted like args).
        out_exists: create ``{out}`` (non-empty) before the run; it must be left as it was on failure.
    """

    name: str
    args: tuple[str, ...]
    expect: str = "refuse"
    quick: bool = False
    env: tuple[tuple[str, str], ...] = ()
    out_exists: bool = False

    @property
    def command(self) -> str:
        return self.name.split("/")[0]


@dataclass
class Outcome:
    """What one case did and whether it held the contract."""

    name: str
    command: str
    args: list[str]
    held: bool
    reason: str
    returncode: int | None
    seconds: float
    error_line: str = ""
    output_tail: str = field(default="", repr=False)


# ---------------------------------------------------------------------------------------------
# Fixtures: built once, shared read-only by every case


def build_fixtures(root: Path) -> None:
    """A good copy of the embedded model and its damaged variants, data files, YAML files."""
    import torch
    import transformers
    from safetensors.torch import load_file, save_file

    from interlace.data import vqa
    from interlace.embedded import MODEL_DIR

    model = root / "model"
    shutil.copytree(MODEL_DIR, model)
    weights = "model.safetensors"

    def variant(name: str) -> Path:
        path = root / name
        shutil.copytree(model, path)
        return path

    size = (model / weights).stat().st_size
    with open(variant("truncated") / weights, "r+b") as handle:
        handle.truncate(size // 2)
    (variant("garbage") / weights).write_bytes(os.urandom(4096))
    (variant("empty-weights") / weights).write_bytes(b"")
    tensors = load_file(model / weights)
    layer_weight = next(k for k in tensors if ".layers.0." in k and k.endswith("weight") and tensors[k].dim() == 2)
    nan = dict(tensors)
    nan[layer_weight] = torch.full_like(tensors[layer_weight], float("nan"))
    save_file(nan, variant("nan") / weights, metadata={"format": "pt"})
    save_file({k: v for k, v in tensors.items() if k != layer_weight}, variant("missing-tensor") / weights, metadata={"format": "pt"})
    config = json.loads((model / "config.json").read_text())
    text = config.get("text_config", config)
    for name, value in (("layers-string", "four"), ("layers-too-many", text["num_hidden_layers"] + 4)):
        text["num_hidden_layers"], original = value, text["num_hidden_layers"]
        (variant(name) / "config.json").write_text(json.dumps(config))
        text["num_hidden_layers"] = original
    (variant("config-garbage") / "config.json").write_text("{ not json")
    tokenizer = variant("tokenizer-corrupt") / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text()[:50])
    (variant("no-config") / "config.json").unlink()

    from transformers import GPT2Config, GPT2LMHeadModel

    transformers.logging.set_verbosity_error()  # the toy config's token ids outside its vocabulary
    transformers.logging.disable_progress_bar()
    GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=32, n_head=2, vocab_size=64, n_positions=64)).save_pretrained(root / "gpt2")
    (root / "modèle").symlink_to(model)

    data = root / "data"
    data.mkdir()
    rows = []
    for i, sample in enumerate(vqa.load_split("calib", 40)):
        sample["images"][0].save(data / f"img{i}.png")
        rows.append({"images": [f"img{i}.png"], "texts": sample["texts"]})
    shutil.copy(data / "img0.png", root / "secret.png")
    (data / "link.png").symlink_to(root / "secret.png")
    os.mkfifo(data / "fifo.png")
    texts = rows[0]["texts"]

    def jsonl(name: str, items: list, raw: bytes | None = None) -> None:
        (data / name).write_bytes(raw if raw is not None else "".join(json.dumps(r) + "\n" for r in items).encode())

    jsonl("good.jsonl", rows)
    jsonl("traversal.jsonl", [{"images": ["../secret.png"], "texts": texts}] * 40)
    jsonl("absolute.jsonl", [{"images": [str(root / "secret.png")], "texts": texts}] * 40)
    jsonl("symlink.jsonl", [{"images": ["link.png"], "texts": texts}] * 40)
    jsonl("dev-zero.jsonl", [{"images": ["/dev/zero"], "texts": texts}] * 40)
    jsonl("fifo.jsonl", [{"images": ["fifo.png"], "texts": texts}] * 40)
    jsonl("garbage.jsonl", [], raw=b"\x00\xff garbage\n{not json\n" * 40)
    jsonl("deep.jsonl", [], raw=(b"[" * 100_000 + b"]" * 100_000 + b"\n") * 3)
    jsonl("latin1.jsonl", [], raw=json.dumps({"text": "caf\u00e9"}).encode("latin-1", "replace").replace(b"\\u00e9", b"\xe9") + b"\n")
    jsonl("empty.jsonl", [])
    folder = data / "imagefolder"
    folder.mkdir()
    jsonl("imagefolder/metadata.jsonl", [{"file_name": "../../secret.png", "texts": texts}] * 20)

    yamls = {
        "bomb": "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")),
        "deep": "ratio: " + "[" * 5000 + "]" * 5000 + "\n",
        "bigint": "seed: " + "9" * 5000 + "\n",
        "huge": "data: '" + "a" * 4_000_000 + "'\n",
        "long-value": "method: '" + "a" * 400_000 + "'\n",
        "types": "ratio: abc\ncalib_samples: '10'\ndo_heal: 'no'\nheal:\n  lr: [1]\n",
        "unknown": "ratoi: 0.3\nheal:\n  warmup: 3\n",
        "not-a-mapping": "- 1\n- 2\n",
        "int-keys": "1: 2\n",
    }
    (root / "yaml").mkdir()
    for name, text_value in yamls.items():
        (root / "yaml" / f"{name}.yaml").write_text(text_value)
    (root / "yaml" / "latin1.yaml").write_bytes(b"ratio: 0.3\nmethod: '\xe9'\n")
    os.mkfifo(root / "yaml" / "fifo.yaml")
    (root / "not-a-dir").write_text("a file where a directory is expected\n")


# ---------------------------------------------------------------------------------------------
# Cases


def build_cases() -> list[Case]:
    """Every (command, damaged input) pair tried; see Case for the placeholders."""
    cases: list[Case] = []

    def add(name: str, *args: str, **kwargs) -> None:
        cases.append(Case(name, tuple(args), **kwargs))

    damaged_models = (
        "missing", "truncated", "garbage", "empty-weights", "nan", "missing-tensor", "layers-string",
        "layers-too-many", "config-garbage", "tokenizer-corrupt", "no-config", "gpt2",
    )  # fmt: skip
    quick_models = {"garbage"}
    for damage in damaged_models:
        model = f"{{fx}}/{damage}"
        quick = damage in quick_models
        # NaN weights, a missing tensor or a deeper config than stored must never be "verified".
        add(f"prune/model-{damage}", model, *PRUNE, "--out", "{out}")
        add(f"eval/model-{damage}", model, "--n-per-task", "2")
        add(f"bench/model-{damage}", model, "--fast", "--repeats", "1", "--image-size", "none")
        add(f"compare/model-{damage}", model, "--methods", "interlace", *SMALL, "--out", "{out}")
        add(f"sweep/model-{damage}", model, "--ratios", "0.25", *SMALL, "--out", "{out}")
        add(f"cut/model-{damage}", model, "{out}", "--drop", "1", quick=quick and damage == "garbage")

    for data in ("traversal", "absolute", "symlink", "dev-zero", "fifo", "garbage", "deep", "latin1", "empty"):
        quick = data in ("traversal", "fifo")
        add(f"prune/data-{data}", "{model}", *PRUNE, "--data", f"{{fx}}/data/{data}.jsonl", "--out", "{out}", quick=quick)
        add(f"compare/data-{data}", "{model}", "--methods", "interlace", *SMALL, "--data", f"{{fx}}/data/{data}.jsonl", "--out", "{out}")
        add(f"sweep/data-{data}", "{model}", "--ratios", "0.25", *SMALL, "--data", f"{{fx}}/data/{data}.jsonl", "--out", "{out}")
    add("prune/data-imagefolder-traversal", "{model}", *PRUNE, "--data", "{fx}/data/imagefolder", "--out", "{out}")
    add("prune/data-is-a-fifo", "{model}", *PRUNE, "--data", "{fx}/yaml/fifo.yaml", "--out", "{out}")
    add("prune/data-name-too-long", "{model}", *PRUNE, "--data", "{fx}/" + "d" * 300, "--out", "{out}")
    add("prune/data-absolute-allowed", "{model}", *PRUNE, "--data", "{fx}/data/absolute.jsonl", "--images-anywhere", "--out", "{out}", expect="succeed")

    for name in ("bomb", "deep", "bigint", "huge", "long-value", "types", "unknown", "not-a-mapping", "int-keys", "latin1", "fifo"):
        add(f"prune/yaml-{name}", "--config", f"{{fx}}/yaml/{name}.yaml", "--out", "{out}", quick=name in ("bomb", "latin1", "bigint"))

    flags = {
        "seed-2^32": ["--seed", str(2**32)],
        "seed-negative": ["--seed", "-1"],
        "ratio-nan": ["--ratio", "nan"],
        "ratio-one": ["--ratio", "1"],
        "calib-zero": ["--calib-samples", "0"],
        "threads-huge": ["--threads", "99999"],
        "kd-top-k-huge": ["--heal-loss", "kd", "--kd-top-k", "100000"],
        "lr-inf": ["--lr", "inf"],
        "max-length-1": ["--max-length", "1"],
        "json-missing-dir": ["--json", "{case}/missing/r.json"],
        "json-is-dir": ["--json", "{case}"],
        "json-name-too-long": ["--json", "{case}/" + "j" * 300],
    }
    for name, extra in flags.items():
        budget = HEAL if name in ("max-length-1", "kd-top-k-huge") else PRUNE
        add(f"prune/flag-{name}", "{model}", *budget, *extra, "--out", "{out}", quick=name in ("seed-2^32", "json-missing-dir"))
    add("prune/out-name-too-long", "{model}", *PRUNE, "--out", "{case}/" + "o" * 300)
    add("prune/out-is-cwd", "{model}", *PRUNE, "--out", ".")
    add("prune/out-is-cwd-overwrite", "{model}", *PRUNE, "--out", ".", "--overwrite")
    add("prune/out-is-the-model", "{copy}", *PRUNE, "--out", "{copy}", "--overwrite")
    add("prune/out-holds-the-model", "{case}/parent/model", *PRUNE, "--out", "{case}/parent", "--overwrite")
    add("prune/out-is-a-file", "{model}", *PRUNE, "--out", "{fx}/not-a-dir")
    add("prune/out-not-empty", "{model}", *PRUNE, "--out", "{out}", out_exists=True)
    add("prune/resume-nothing", "{model}", *PRUNE, "--resume", "--out", "{out}")
    add("prune/good", "{model}", *PRUNE, "--out", "{out}", expect="succeed")
    add("prune/ascii-terminal", "{fx}/modèle", *PRUNE, "--out", "{case}/sortie-é", expect="succeed", env=(("PYTHONIOENCODING", "ascii"),))

    add("eval/n-zero", "{model}", "--n-per-task", "0")
    add("eval/json-missing-dir", "{model}", "--n-per-task", "2", "--json", "{case}/missing/r.json")
    add("eval/cache-unwritable", "smollm2", "--n-per-task", "2", env=(("INTERLACE_CACHE", "{fx}/not-a-dir/cache"),), quick=True)
    add("eval/good", "{model}", "--n-per-task", "2", expect="succeed")

    add("compare/seed-2^32", "{model}", "--methods", "interlace", *SMALL, "--seed", str(2**32), "--out", "{out}")
    add("compare/methods-unknown", "{model}", "--methods", "bogus", *SMALL, "--out", "{out}")
    add("compare/json-missing-dir", "{model}", "--methods", "interlace", *SMALL, "--json", "{case}/missing/r.json", "--out", "{out}")
    add("compare/out-is-a-file", "{model}", "--methods", "interlace", *SMALL, "--out", "{fx}/not-a-dir")
    add("sweep/ratios-garbage", "{model}", "--ratios", "abc", *SMALL, "--out", "{out}")
    add("sweep/json-missing-dir", "{model}", "--ratios", "0.25", *SMALL, "--json", "{case}/missing/r.json", "--out", "{out}", quick=True)
    add("sweep/seed-2^32", "{model}", "--ratios", "0.25", *SMALL, "--seed", str(2**32), "--out", "{out}")

    bench = ("--fast", "--repeats", "1", "--image-size", "none")
    add("bench/device-tpu", "{model}", *bench, "--device", "tpu:7", quick=True)
    add("bench/device-cuda-99", "{model}", *bench, "--device", "cuda:99")
    add("bench/device-cuda", "{model}", *bench, "--device", "cuda", expect="clean")  # refused on a CPU-only machine
    add("bench/prompt-tokens-1e8", "{model}", "--fast", "--prompt-tokens", "100000000", quick=True)
    add("bench/image-size-huge", "{model}", "--fast", "--image-size", "100000x100000")
    add("bench/image-size-garbage", "{model}", "--fast", "--image-size", "axb")
    add("bench/json-missing-dir", "{model}", *bench, "--json", "{case}/missing/r.json")
    add("bench/ascii-terminal", "{fx}/modèle", *bench, expect="succeed", env=(("PYTHONIOENCODING", "ascii"),))
    add("bench/good", "{model}", *bench, expect="succeed")

    add("cut/drop-out-of-range", "{model}", "{out}", "--drop", "99")
    add("cut/drop-garbage", "{model}", "{out}", "--drop", "a,b")
    add("cut/out-exists", "{model}", "{out}", "--drop", "1", out_exists=True)
    add("cut/out-is-the-model", "{copy}", "{copy}", "--drop", "1")
    add("cut/good", "{model}", "{out}", "--drop", "1", expect="succeed")

    add("demo/out-is-cwd", "--out", ".", quick=True)
    add("demo/out-not-empty", "--out", "{out}", out_exists=True)
    add("demo/json-missing-dir", "--out", "{out}", "--json", "{case}/missing/r.json")
    add("demo/threads-huge", "--out", "{out}", "--threads", "99999")
    return cases


# ---------------------------------------------------------------------------------------------
# Running and checking


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of everything under root, symlinks not followed."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            state[str(path.relative_to(root))] = (info.st_size if not path.is_dir() else 0, info.st_mtime_ns)
    return state


def run_case(case: Case, fixtures: Path, cases_root: Path, python: str, timeout: float) -> Outcome:
    """Run one case in its own directory and check the contract."""
    case_dir = cases_root / case.name.replace("/", "__").replace("^", "")
    case_dir.mkdir(parents=True)
    (case_dir / PRECIOUS).write_text("the user's work\n")
    out = case_dir / "out"
    places = {"fx": str(fixtures), "model": str(fixtures / "model"), "out": str(out), "case": str(case_dir),
              "copy": str(case_dir / "model-copy")}  # fmt: skip
    if "{copy}" in " ".join(case.args):
        shutil.copytree(fixtures / "model", case_dir / "model-copy")
    if "{case}/parent/model" in case.args:
        shutil.copytree(fixtures / "model", case_dir / "parent" / "model")
    if case.out_exists:
        out.mkdir()
        (out / "keep.txt").write_text("keep me\n")
    args = [arg.format(**places) for arg in case.args]
    home = case_dir / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
        "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "1", "INTERLACE_CACHE": os.environ.get("INTERLACE_CACHE", str(home / "cache")),
        "COLUMNS": "120", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
        **{key: value.format(**places) for key, value in case.env},
    }  # fmt: skip
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    before_fixtures = snapshot(fixtures)
    model_copies = {p: snapshot(p) for p in (case_dir / "model-copy", case_dir / "parent" / "model") if p.is_dir()}
    out_before = snapshot(out) if out.is_dir() else None
    started = time.perf_counter()
    try:
        result = subprocess.run(
            [python, "-m", "interlace", case.command, *args], capture_output=True, text=True, errors="replace",
            env=env, cwd=case_dir, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired as expired:
        tail = ((expired.stdout or b"") if isinstance(expired.stdout, bytes) else (expired.stdout or "").encode())[-2000:]
        return Outcome(case.name, case.command, args, False, f"timed out after {timeout:.0f}s", None, timeout, output_tail=tail.decode(errors="replace"))
    seconds = time.perf_counter() - started
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    reasons = []
    code = result.returncode
    if code not in ALLOWED_CODES:
        reasons.append(f"exit code {code}")
    if case.expect == "refuse" and code == 0:
        reasons.append("accepted an input it must refuse (exit 0)")
    if case.expect == "succeed" and code != 0:
        reasons.append(f"failed (exit {code}) where it should succeed")
    if code != 0:
        if "Traceback" in output:
            last = [line for line in output.splitlines() if line.strip()][-1:]
            reasons.append(f"traceback ({last[0][:160] if last else ''})")
        if len(errors) > 1:
            reasons.append(f"{len(errors)} error: lines")
        if out_before is None and out.exists():
            reasons.append(f"left {out.name} after failing")
        elif out_before is not None and (not out.is_dir() or snapshot(out) != out_before):
            reasons.append("changed the existing --out after failing")
    tmp_left = [str(p.relative_to(case_dir)) for p in case_dir.rglob("*.tmp")]
    if tmp_left:
        reasons.append(f"left {', '.join(tmp_left[:3])}")
    if not (case_dir / PRECIOUS).is_file() or (case_dir / PRECIOUS).read_text() != "the user's work\n":
        reasons.append(f"deleted or changed {PRECIOUS} in the working directory")
    if snapshot(fixtures) != before_fixtures:
        reasons.append("touched the shared fixtures (model or data)")
    for path, before in model_copies.items():
        if not path.is_dir() or snapshot(path) != before:
            reasons.append(f"changed or deleted the source model {path.relative_to(case_dir)}")
    return Outcome(
        case.name, case.command, args, not reasons, "; ".join(reasons), code, round(seconds, 1),
        errors[0][:300] if errors else "", output[-2000:],
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the fast subset (about 2 minutes)")
    parser.add_argument("--commands", default=",".join(COMMANDS), help=f"comma list of commands to try (default: all of {', '.join(COMMANDS)})")
    parser.add_argument("--match", default="", help="only cases whose name contains this text")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per case (default 300)")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at once (default 1)")
    parser.add_argument("--json", type=Path, help="also write the outcomes as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (its path is printed)")
    parser.add_argument("--list", action="store_true", help="list the chosen cases and exit")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs interlace (default: this one)")
    options = parser.parse_args(argv)

    commands = {c.strip() for c in options.commands.split(",") if c.strip()}
    unknown = commands - set(COMMANDS)
    if unknown:
        parser.error(f"--commands: unknown {', '.join(sorted(unknown))}; choose from {', '.join(COMMANDS)}")
    cases = [c for c in build_cases() if c.command in commands and options.match in c.name and (c.quick or not options.quick)]
    if options.list:
        for case in cases:
            print(f"{case.name:40} expect {case.expect:8} interlace {case.command} {' '.join(case.args)[:100]}")
        return 0
    root = Path(tempfile.mkdtemp(prefix="interlace-adversarial-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through the finally below: no temp dir left
    try:
        fixtures = root / "fixtures"
        fixtures.mkdir()
        build_fixtures(fixtures)
        print(f"{len(cases)} cases, fixtures in {fixtures}", flush=True)

        def one(case: Case) -> Outcome:
            outcome = run_case(case, fixtures, root / "cases", options.python, options.timeout)
            status = "held  " if outcome.held else "FAILED"
            line = f"{status} {outcome.name} (exit {outcome.returncode}, {outcome.seconds:.0f}s)"
            print(line + (f": {outcome.reason}" if not outcome.held else ""), flush=True)
            return outcome

        with ThreadPoolExecutor(max(1, options.jobs)) as pool:
            outcomes = list(pool.map(one, cases))
    finally:
        if options.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    held = sum(o.held for o in outcomes)
    print(f"tried {len(outcomes)}, held {held}, failed {len(outcomes) - held}")
    for outcome in outcomes:
        if not outcome.held:
            print(f"  {outcome.name}: {outcome.reason}")
    if options.json:
        report = {"tried": len(outcomes), "held": held, "failed": len(outcomes) - held,
                  "cases": [{**asdict(o), "output_tail": "" if o.held else o.output_tail[-1000:]} for o in outcomes]}  # fmt: skip
        options.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if held == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
