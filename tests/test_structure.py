"""The package layering (docs/structure.md), read from the source by scripts/import_graph.py: one
select -> cut -> heal core (interlace.stages) that prune, compare and sweep call, and a config
module that the pipeline imports, not the reverse."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def edges():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    cwd = os.getcwd()
    os.chdir(ROOT)  # the script reads ./src/interlace
    try:
        spec.loader.exec_module(module)
        return {k.removeprefix("interlace."): {t.removeprefix("interlace.") for t in v} for k, v in module.graph().items()}
    finally:
        os.chdir(cwd)


def test_compare_and_sweep_do_not_reach_into_the_pipeline(edges):
    assert "pipeline" not in edges["compare"] and "pipeline" not in edges["sweep"]
    assert "stages" in edges["compare"] and "stages" in edges["sweep"] and "stages" in edges["pipeline"]


def test_config_is_below_the_pipeline(edges):
    assert "config" in edges["pipeline"] and "pipeline" not in edges["config"]


def test_only_the_core_cuts_and_selects(edges):
    for caller in ("pipeline", "compare", "sweep"):
        assert "surgery" not in edges[caller], caller  # cutting goes through stages.apply_plan
    assert "surgery" in edges["stages"]


@pytest.mark.parametrize("path", sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "scripts").glob("*.py")]), ids=lambda p: p.name)
def test_every_benchmark_and_script_imports(path):
    """A moved or renamed library name breaks the scripts that import it, which no other test runs
    (benchmarks/smollm2_interlace_probe.py imported a function its module no longer had)."""
    name = f"_script_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
