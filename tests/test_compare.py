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
