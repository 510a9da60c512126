"""The package's shape: modules import each other without a cycle, and a module that only needs a device choice
does not pull in SNAC."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "axolotl_orpheus"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_at_load(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports when it is loaded (module level, not inside functions)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Try):  # guarded imports run at load too
            nodes = [*node.body]
        else:
            nodes = [node]
        for statement in nodes:
            if isinstance(statement, ast.ImportFrom) and statement.module and statement.level == 0:
                for alias in statement.names:
                    submodule = f"{statement.module}.{alias.name}"
                    found.add(submodule if submodule in modules else statement.module)
            elif isinstance(statement, ast.Import):
                found.update(alias.name for alias in statement.names)
    return {name for name in found if name in modules}


def test_no_import_cycle():
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: imported_at_load(path, set(paths)) - {name} for name, path in paths.items()}
    assert graph["axolotl_orpheus.codec.loading"] >= {"axolotl_orpheus.codec.fast", "axolotl_orpheus.devices"}
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as cycle:
        raise AssertionError(f"import cycle: {' -> '.join(cycle.args[1])}") from None


def test_hearing_models_choose_a_device_without_importing_snac():
    script = (
        "import sys; import axolotl_orpheus.listen.asr, axolotl_orpheus.listen.voiceprint, axolotl_orpheus.devices; "
        "print('snac' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
