"""The package's floors: every import runs down, never up or sideways between method packages.

    errors  <-  validation  <-  runtime, tensorio, reports  <-  functional, backbones  <-  nn, data
            <-  models, energy  <-  train  <-  lca, conversion, dts  <-  reproduce  <-  cli

A module may import its own package and any package on a lower floor (imports inside functions count
too).  Nothing imports ``cli``; ``functional`` imports nothing but ``errors``.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "spikevit"

FLOORS = [
    {"errors"},
    {"validation"},
    {"runtime", "tensorio", "reports"},
    {"functional", "backbones"},
    {"nn", "data"},
    {"models", "energy"},
    {"train"},
    {"lca", "conversion", "dts"},
    {"reproduce"},
    {"cli"},
]
FLOOR = {unit: level for level, units in enumerate(FLOORS) for unit in units}


def _unit(module: str) -> str | None:
    """``spikevit.lca.encode`` -> ``lca``; ``spikevit`` itself -> None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "spikevit" and len(parts) > 1 else None


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "spikevit":
                out |= {f"spikevit.{alias.name}" for alias in node.names}
            else:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
    return {m for m in out if m.split(".")[0] == "spikevit"}


def import_violations(package: Path = PACKAGE) -> list[str]:
    """Every import that runs up or sideways, as ``file: unit -> unit``; unknown units are violations too."""
    bad = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if len(rel.parts) == 1 and rel.name == "__init__.py":
            continue                                  # the public face may hand on names from anywhere
        here = rel.parts[0].removesuffix(".py")
        if here not in FLOOR:
            bad.append(f"{rel}: package {here!r} has no floor in tests/test_architecture.py")
            continue
        for module in _imports(path):
            there = _unit(module)
            if there is None or there == here:
                continue
            if there not in FLOOR:
                bad.append(f"{rel}: imports {module} ({there!r} has no floor)")
            elif FLOOR[there] >= FLOOR[here]:
                bad.append(f"{rel}: {here} (floor {FLOOR[here]}) imports {module} (floor {FLOOR[there]})")
    return bad


def test_every_import_runs_down_a_floor():
    assert import_violations() == []


def test_the_rule_catches_an_import_against_the_grain(tmp_path):
    # a copy of two floors with one import running up: the checker must name it
    (tmp_path / "functional").mkdir()
    (tmp_path / "nn").mkdir()
    (tmp_path / "functional" / "ok.py").write_text("from spikevit.errors import require\n")
    (tmp_path / "functional" / "bad.py").write_text("def f():\n    from spikevit.nn.lif import LIF\n")
    (tmp_path / "nn" / "lif.py").write_text("import spikevit.functional.neurons\nfrom spikevit.cli import main\n")
    found = import_violations(tmp_path)
    assert found == ["functional/bad.py: functional (floor 3) imports spikevit.nn.lif (floor 4)",
                     "nn/lif.py: nn (floor 4) imports spikevit.cli (floor 9)"]
