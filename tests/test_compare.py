"""`interlace compare` on the embedded model with tiny budgets: JSON schema, table and chart."""

import json
import subprocess
import sys


def test_compare_cli_writes_the_promised_json(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "interlace", "compare", "--methods", "interlace,shortgpt,magnitude-2:4", "--out", str(tmp_path / "c"),
         "--calib-samples", "24", "--train-samples", "32", "--eval-samples-per-task", "5", "--no-bench", "--json", str(tmp_path / "c.json")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "c.json").read_text())
    assert {"dense", "dense_ft", "methods"} <= set(report)
    entries = report["methods"]
    assert set(entries) == {"interlace", "shortgpt", "magnitude-2:4"}
    for entry in entries.values():
        assert {"overall", "retention", "retention_vs_dense_ft", "layers_removed", "healed", "speedup"} <= set(entry)
        assert entry["retention"] == round(entry["overall"] / report["dense"]["overall"], 4)
    assert entries["interlace"]["healed"] and entries["interlace"]["layers_removed"] == 3
    assert not entries["shortgpt"]["healed"] and entries["magnitude-2:4"]["layers_removed"] == 0
    assert (tmp_path / "c" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "| interlace |" in (tmp_path / "c" / "compare.md").read_text()


def _rows(report):
    """A report's rows without their wall times (the only thing two identical runs differ in)."""
    return {name: {k: v for k, v in entry.items() if k != "wall_seconds"} for name, entry in report["methods"].items()}


def test_an_interrupted_compare_resumed_gives_the_rows_of_a_full_one(tmp_path):
    import pytest

    from interlace.compare import CompareConfig, CompareResumeError, compare
    from interlace.config import HealConfig, PruneConfig

    def config(out, resume=False, **changes):
        values = dict(out=out, calib_samples=24, train_samples=32, eval_samples_per_task=5,
                      heal=HealConfig(lr=1e-3, batch_size=16, micro_batch_size=16), resume=resume)
        return CompareConfig(PruneConfig(**{**values, **changes}), methods=("reverse-ft", "shortgpt", "interlace"), bench=False)

    full = compare(config(tmp_path / "full"), log=lambda *_: None)

    def stop_at_interlace(line):
        if line == "interlace: selecting":
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        compare(config(tmp_path / "part"), log=stop_at_interlace)
    saved = sorted(p.name for p in (tmp_path / "part" / "rows").glob("*.json"))
    assert saved == ["dense-ft.json", "dense.json", "options.json", "reverse-ft.json", "scores.json", "shortgpt.json"]

    with pytest.raises(CompareResumeError, match=r"other options \(seed 0 -> 1\)"):
        compare(config(tmp_path / "part", resume=True, seed=1), log=lambda *_: None)
    lines = []
    resumed = compare(config(tmp_path / "part", resume=True), log=lines.append)
    assert "reverse-ft: selecting" not in lines and "dense-FT: the same healing budget on every decoder layer" not in lines
    assert "interlace: selecting" in lines  # only the unfinished row ran
    assert _rows(resumed) == _rows(full) and resumed["dense"] == full["dense"] and resumed["dense_ft"] == full["dense_ft"]
    assert full["methods"]["reverse-ft"]["finetuned"] == [6, 7, 8]  # the last three kept of 12 - 3


def test_compare_ctrl_c_is_one_line_that_names_resume(cli, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import interlace.compare

    def interrupted(config, log):
        raise KeyboardInterrupt

    monkeypatch.setattr(interlace.compare, "compare", interrupted)
    result = CliRunner().invoke(cli, ["compare", "--methods", "reverse", "--out", str(tmp_path / "c"), "--no-bench"])
    assert result.exit_code == 130
    assert result.output.strip() == f"interrupted: 0 finished rows saved in {tmp_path / 'c' / 'rows'}; rerun with --resume to go on from them"


def test_prunes_default_then_the_chooser_head_the_table_and_the_chooser_reuses_the_row_it_chose(tmp_path):
    from interlace.compare import ALL, CompareConfig, compare
    from interlace.config import DEFAULT_METHOD, HealConfig, PruneConfig

    assert ALL[-1] == "auto"  # the chooser runs last, so it can reuse a row
    lines = []
    run = PruneConfig(out=tmp_path / "c", calib_samples=24, train_samples=32, eval_samples_per_task=5,
                      heal=HealConfig(lr=1e-3, batch_size=16, micro_batch_size=16))
    rows = ("interlace-tn", "consecutive-ft", DEFAULT_METHOD)
    report = compare(CompareConfig(run, methods=(*rows, "auto"), bench=False), log=lines.append)
    assert list(report["methods"]) == [DEFAULT_METHOD, "auto", "interlace-tn", "consecutive-ft"]
    auto = report["methods"]["auto"]
    same = [name for name in rows if report["methods"][name]["dropped"] == auto["dropped"]]
    assert auto["chose"] and same, lines  # on these budgets the chooser picks one of the two rows' plans
    assert f"auto: chose {auto['chose']}, the plan and healing of row {same[0]}: its result" in lines
    assert (auto["overall"], auto["tasks"], auto["finetuned"]) == tuple(report["methods"][same[0]][k] for k in ("overall", "tasks", "finetuned"))
    assert f"| auto (chose {auto['chose']}) |" in (tmp_path / "c" / "compare.md").read_text()
