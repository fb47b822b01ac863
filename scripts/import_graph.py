"""Print which interlace modules each interlace module imports (module level and inside functions),
the package's lines per module, or its longest functions.

    python scripts/import_graph.py            # every module, one line each
    python scripts/import_graph.py compare    # one module
    python scripts/import_graph.py --lines    # lines per module, largest first
    python scripts/import_graph.py --longest  # the 15 longest functions
    python scripts/import_graph.py --users config   # the modules that import one module

Run from a checkout's root: it reads ./src/interlace (so another checkout, e.g. an older commit
in a git worktree, can be compared with the same script).

Read from the source with ``ast``, nothing imported; tests/test_structure.py checks the layering
this shows (compare and sweep use the shared stages, not the pipeline's internals).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path.cwd() / "src" / "interlace"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The interlace modules ``path`` imports, with names imported from a package resolved to
    their submodule when one exists (``from interlace.data import vqa`` -> interlace.data.vqa)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("interlace")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("interlace"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists() else node.module)
    return found - {module_name(path)}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def lines() -> dict[str, int]:
    return {module_name(p): len(p.read_text().splitlines()) for p in sorted(PACKAGE.rglob("*.py"))}


def longest(count: int = 15) -> list[tuple[int, str]]:
    """(lines, module.function) of the longest functions and methods, nested ones included."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((node.end_lineno - node.lineno + 1, f"{module_name(path).removeprefix('interlace.')}.{node.name}"))
    return sorted(found, reverse=True)[:count]


def main() -> None:
    if sys.argv[1:2] == ["--lines"]:
        counts = lines()
        for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(f"{n:5d} {name.removeprefix('interlace.')}")
        print(f"{sum(counts.values()):5d} total in {len(counts)} modules")
        return
    if sys.argv[1:2] == ["--longest"]:
        for n, name in longest():
            print(f"{n:5d} {name}")
        return
    edges = graph()
    if sys.argv[1:2] == ["--users"]:
        target = f"interlace.{sys.argv[2]}"
        print(", ".join(sorted(k.removeprefix("interlace.") for k, v in edges.items() if target in v)) or "-")
        return
    wanted = {f"interlace.{name}" for name in sys.argv[1:]} or set(edges)
    for name in sorted(wanted):
        targets = sorted(t.removeprefix("interlace.") for t in edges.get(name, ()))
        print(f"{name.removeprefix('interlace.')}: {', '.join(targets) or '-'}")


if __name__ == "__main__":
    main()
