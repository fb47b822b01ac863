"""Run configuration: defaults < YAML < flags, with the embedded model's scaled healing defaults."""

import pytest

from interlace.config import EMBEDDED_HEAL, ConfigError, read_yaml, resolve_config


def test_flags_override_yaml_which_overrides_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("ratio: 0.3\nmethod: shortgpt\nheal:\n  lr: 0.002\n  method: lora\n  lora_rank: 4\n")
    config = resolve_config(read_yaml(path), {"ratio": 0.2, "heal_method": "full"})
    assert config.ratio == 0.2 and config.method == "shortgpt"
    assert config.heal.lr == 0.002 and config.heal.method == "full" and config.heal.lora_rank == 4
    assert config.heal.batch_size == EMBEDDED_HEAL["batch_size"]


def test_hub_models_get_the_papers_healing_defaults():
    config = resolve_config({}, {"model": "Qwen/Qwen3-VL-8B-Instruct", "seed": 3})
    assert config.heal.lr == 1e-5 and config.heal.batch_size == 32 and config.heal.seed == 3


def test_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="healing options"):
        resolve_config({"heal": {"lr": -1}}, {})
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml("/no/such/file.yaml")


# Every key is checked against its declared type, with the key named.


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return read_yaml(path)


def test_an_exponent_without_a_dot_is_the_number_the_user_meant(tmp_path):
    # YAML 1.1 (PyYAML's default) reads 1e-3 as a string; the config loader reads it as YAML 1.2 does.
    config = resolve_config(write(tmp_path, "ratio: 2.5e-1\nheal:\n  lr: 1e-3\n  weight_decay: 1E-2\n"), {})
    assert config.ratio == 0.25 and config.heal.lr == 0.001 and config.heal.weight_decay == 0.01
    assert write(tmp_path, "model: 1e3_x\n")["model"] == "1e3_x"  # still a string where it is not a number


@pytest.mark.parametrize(
    "text, needle",
    [
        ("ratio: abc", "ratio in --config must be a number, got 'abc' (str)"),
        ("calib_samples: '10'", "calib_samples in --config must be an integer, got '10' (str); write the number without quotes"),
        ("calib_samples: 10.0", "calib_samples in --config must be an integer, got 10.0 (float)"),
        ("train_samples: [1]", "train_samples in --config must be an integer or null, got [1] (list)"),
        ("method: 3", "method in --config must be a string, got 3 (int)"),
        ("dtype: 32", "dtype in --config must be a string, got 32 (int)"),
        ("do_heal: 'no'", "do_heal in --config must be true or false, got 'no' (str)"),
        ("do_heal: 0", "do_heal in --config must be true or false, got 0 (int)"),
        ("out: 3", "out in --config must be a path, got 3 (int)"),
        ("heal:\n  lr: '1e-3'", "heal.lr in --config must be a number, got '1e-3' (str)"),
        ("heal:\n  train_lm_head: 'yes'", "heal.train_lm_head in --config must be true or false"),
    ],
)
def test_values_of_the_wrong_type_name_their_key(tmp_path, text, needle):
    with pytest.raises(ConfigError) as error:
        resolve_config(write(tmp_path, text + "\n"), {})
    assert needle in str(error.value)


def test_yaml_do_heal_no_unquoted_is_false(tmp_path):
    assert resolve_config(write(tmp_path, "do_heal: no\n"), {}).do_heal is False


def test_the_library_checks_types_too():
    from interlace.config import PruneConfig
    from interlace.heal.loop import HealConfig

    with pytest.raises(ConfigError, match=r"ratio must be a number, got 'abc'"):
        PruneConfig(ratio="abc")
    with pytest.raises(ValueError, match=r"lr must be a number, got '1e-3' \(str\)"):
        HealConfig(lr="1e-3")
    assert PruneConfig(ratio=1, out="x").ratio == 1.0 and PruneConfig(out="x").out.name == "x"


@pytest.mark.parametrize(
    "heal, needle",
    [
        ({"lr": float("nan")}, "lr must be"),
        ({"lr": float("inf")}, "lr must be"),
        ({"lr": 1e308}, "lr must be"),
        ({"batch_size": 48, "micro_batch_size": 32}, "multiple of micro_batch_size 32"),
        ({"save_every": -1}, "save_every must be >= 0"),
        ({"kd_temperature": float("nan")}, "kd_temperature"),
        ({"anchor_weight": float("nan")}, "anchor_weight"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"max_length": 0}, "max_length"),
    ],
)
def test_healing_values_that_cannot_train_are_refused(heal, needle):
    with pytest.raises(ConfigError, match="healing options") as error:
        resolve_config({"heal": heal}, {})
    assert needle in str(error.value)


def test_a_batch_size_given_alone_gets_a_micro_batch_that_divides_it():
    assert resolve_config({}, {"batch_size": 48}).heal.micro_batch_size == 24  # embedded default 32
    assert resolve_config({}, {"batch_size": 8}).heal.micro_batch_size == 8
    assert resolve_config({}, {"model": "Qwen/Qwen3-VL-8B-Instruct", "batch_size": 10}).heal.micro_batch_size == 2


# The Python API resolves what depends on the model, and checks what the CLI checks.


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory):
    from test_text_models import SMOLLM2_TEMPLATE, tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("llama"), "llama", SMOLLM2_TEMPLATE)


def test_a_text_model_through_the_python_api_runs_like_the_cli(text_checkpoint, tmp_path):
    """PruneConfig(model=<text model>) used to keep data="embedded", which validate refused (the
    CLI alone picked pydocs); now the API resolves the default and the run goes through."""
    import json

    from interlace.config import HealConfig, PruneConfig, validate, with_model_defaults
    from interlace.pipeline import prune

    config = PruneConfig(
        model=str(text_checkpoint), out=tmp_path / "out", method="shortgpt", calib_samples=4, train_samples=8,
        eval_samples_per_task=2, heal=HealConfig(lr=1e-3, batch_size=4, micro_batch_size=4),
    )  # fmt: skip
    assert config.data is None and with_model_defaults(config).data == "pydocs"
    assert config.data is None  # the caller's object is left as it was
    validate(config)
    report = prune(config, log=lambda *_: None)
    assert report.suite == "text" and report.layers_after == report.layers_before - 2
    manifest = json.loads((tmp_path / "out" / "interlace_manifest.json").read_text())
    assert manifest["config"]["data"] == "pydocs"


def test_compare_from_python_refuses_what_the_cli_refuses(tmp_path):
    """compare.compare ran unchecked from Python: the CLI alone validated its inputs."""
    from interlace.compare import CompareConfig, compare
    from interlace.config import PruneConfig

    out = tmp_path / "report"
    run = PruneConfig(model=str(tmp_path / "no-such-model"), out=out, ratio=1.5, calib_samples=0, seed=-1)
    config = CompareConfig(run, methods=("shortgpt", "nope"))
    with pytest.raises(ConfigError) as raised:
        compare(config, log=lambda *_: None)
    message = str(raised.value)
    for needle in ("no-such-model", "--ratio must be between 0 and 1", "'nope' is unknown", "--calib-samples must be >= 1", "--seed must be >= 0"):
        assert needle in message, (needle, message)
    assert not out.exists()


def test_compare_never_deletes_a_rows_folder_it_did_not_write(tmp_path):
    from interlace.compare import CompareConfig, compare
    from interlace.config import PruneConfig

    precious = tmp_path / "rows" / "notes.txt"
    precious.parent.mkdir()
    precious.write_text("mine")
    with pytest.raises(ConfigError, match="did not write"):
        compare(CompareConfig(PruneConfig(out=tmp_path, calib_samples=8), methods=("shortgpt",)), log=lambda *_: None)
    assert precious.read_text() == "mine"


def test_compare_and_sweep_refuse_a_vlm_on_data_no_suite_scores(tmp_path):
    """A VLM on rows of its own has no built-in suite to score compare's and sweep's rows; it used
    to fail after loading with a traceback (and compare left its --out behind)."""
    from interlace.compare import CompareConfig, compare
    from interlace.config import PruneConfig
    from interlace.embedded import MODEL_DIR
    from test_cli_errors import assert_clean_failure, run

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a plain text row"}\n')
    out = tmp_path / "report"
    with pytest.raises(ConfigError, match="vision-language model"):
        compare(CompareConfig(PruneConfig(model=str(MODEL_DIR), data=str(rows), out=out), methods=("shortgpt",)), log=lambda *_: None)
    assert not out.exists()
    result = run("sweep", str(MODEL_DIR), "--data", str(rows), "--ratios", "0.25", "--out", str(out))
    assert_clean_failure(result, "vision-language model", "--harness lmms-eval")
    assert not out.exists()


def test_importing_the_options_loads_neither_the_checks_nor_yaml():
    """interlace.config is three modules loaded on first use (PEP 562): the options alone stay light."""
    import subprocess
    import sys

    code = (
        "import sys, interlace.config.options as o; from interlace.config import PruneConfig, HealConfig;"
        "assert PruneConfig is o.PruneConfig and HealConfig is o.HealConfig;"
        "print(sorted(m for m in ('yaml', 'torch', 'transformers', 'interlace.config.validation', 'interlace.config.merge') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
    from interlace import config

    for name in config.__all__:  # every re-exported name resolves to its module's object
        assert getattr(config, name) is not None, name
    with pytest.raises(ImportError):
        from interlace.config import no_such_name  # noqa: F401


def test_a_text_models_eval_count_is_checked_against_its_own_suite(text_checkpoint, tmp_path):
    """count_problems capped every model's held-out count at the visual-QA test split's per task;
    the text suite takes what its held-out text yields, so a text model has no upper limit."""
    from interlace.config import PruneConfig, count_problems, eval_problems, validate
    from interlace.data import vqa

    over = vqa.TEST_RESERVE + 1
    assert count_problems(8, None, over, vision=False) == []
    assert count_problems(8, None, 0, vision=False) == ["--eval-samples-per-task must be >= 1, got 0"]
    assert count_problems(8, None, over) == [f"--eval-samples-per-task must be in 1..{vqa.TEST_RESERVE}, got {over}"]
    validate(PruneConfig(model=str(text_checkpoint), out=tmp_path / "text", eval_samples_per_task=over))
    with pytest.raises(ConfigError, match=f"must be in 1..{vqa.TEST_RESERVE}"):
        validate(PruneConfig(out=tmp_path / "vlm", eval_samples_per_task=over))  # the embedded VLM
    assert eval_problems(str(text_checkpoint), over) == []
    assert eval_problems(None, over) == [f"--n-per-task must be in 1..{vqa.TEST_RESERVE}, got {over}"]


def test_compare_from_python_resolves_a_text_models_data_like_the_cli(text_checkpoint, tmp_path):
    """CompareConfig holds the PruneConfig prune takes: data None becomes pydocs for a text model
    (with_model_defaults), and the visual-QA data it cannot read is refused before anything loads."""
    import dataclasses
    import json

    from interlace.compare import CompareConfig, compare
    from interlace.config import HealConfig, PruneConfig

    heal = HealConfig(lr=1e-3, batch_size=4, micro_batch_size=4)
    run = PruneConfig(model=str(text_checkpoint), out=tmp_path / "report", calib_samples=4, train_samples=8, eval_samples_per_task=2, heal=heal)
    with pytest.raises(ConfigError, match="text-only model"):
        compare(CompareConfig(dataclasses.replace(run, data="embedded"), methods=("shortgpt",)), log=lambda *_: None)
    assert not (tmp_path / "report").exists()
    report = compare(CompareConfig(run, methods=("shortgpt",), bench=False), log=lambda *_: None)
    assert run.data is None  # the caller's object is left as it was
    assert report["suite"] == "text" and set(report["methods"]) == {"shortgpt"}
    assert json.loads((tmp_path / "report" / "rows" / "options.json").read_text())["data"] == "pydocs"


def test_compare_and_sweep_take_the_run_prune_takes(tmp_path):
    """compare.CompareConfig and sweep.Session are built from a PruneConfig and validated as prune's
    run is, before anything loads; a wrong object is a TypeError that names what is wanted."""
    from interlace.compare import CompareConfig, compare
    from interlace.config import PruneConfig
    from interlace.sweep import Session

    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ConfigError, match="no-such-model"):
        Session(PruneConfig(model=missing, out=tmp_path / "sweep"), log=lambda *_: None)
    with pytest.raises(ConfigError, match="--method 'nope' is unknown"):
        Session(PruneConfig(method="nope", out=tmp_path / "sweep"), log=lambda *_: None)
    with pytest.raises(ConfigError, match="--dtype 'float64' is not supported"):
        compare(CompareConfig(PruneConfig(dtype="float64", out=tmp_path / "report"), methods=("shortgpt",)), log=lambda *_: None)
    with pytest.raises(TypeError, match="run must be a PruneConfig"):
        CompareConfig({"model": None})
    with pytest.raises(TypeError, match="methods must be a tuple"):
        CompareConfig(PruneConfig(), methods="shortgpt,sleb")
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "report").exists()


def test_compare_all_is_every_registered_method_in_the_papers_table_order():
    """compare.ALL is derived from the registry: a new method joins the comparison by registering."""
    from interlace.compare import ALL
    from interlace.methods import METHODS

    assert ALL == (
        "interlace", "interlace-oa", "interlace-tn", "angular+protect", "consecutive", "consecutive-sk", "random",
        "shortgpt", "shortgpt-ft", "angular", "angular-ft", "reverse", "reverse-ft", "deepest-block", "deepest-block-ft",
        "sleb", "sleb-ft", "magnitude-2:4", "wanda-2:4", "auto",
    )  # fmt: skip
    assert {name.removesuffix("-ft") for name in ALL} == set(METHODS)  # the chooser last: it reuses the row it picks
