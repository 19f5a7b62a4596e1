"""The layers, read from the imports (every import, lazy ones inside functions included).

``core`` is at the bottom and imports nothing else from the project; ``agents``,
``critics`` and ``memory`` meet only in ``core`` (critics may call the model seam,
``agents.model``); ``finetune`` may use ``agents`` to load the base model;
``orchestrator`` composes them all; ``cli`` talks only to the orchestrator and the
core's errors; nothing imports ``cli``. No import cycles.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "agents", "critics", "memory", "finetune", "orchestrator")

ALLOWED = {
    "core": ("core",),
    "agents": ("core", "agents"),
    "critics": ("core", "critics", "agents.model"),
    "memory": ("core", "memory"),
    "finetune": ("core", "finetune", "agents"),
    "orchestrator": ("core", "agents", "critics", "memory", "finetune", "orchestrator"),
    "cli": ("orchestrator", "core.errors"),
}


def project_modules() -> dict[str, Path]:
    found = {"cli": ROOT / "cli.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imported(source: str, known: set[str]) -> set[str]:
    """The project modules ``source`` imports, at any depth of the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names
                         if f"{node.module}.{a.name}" in known)
    return {n for n in names if n.split(".")[0] in (*PACKAGES, "cli")}


def violations(module: str, targets: set[str]) -> list[str]:
    rules = ALLOWED[module.split(".")[0]]
    return sorted(t for t in targets if not any(t == r or t.startswith(r + ".") for r in rules))


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imported(path.read_text(encoding="utf-8"), known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_every_import_follows_the_layers() -> None:
    graph = import_graph()
    assert {"core.records", "cli", "orchestrator.runner"} <= set(graph)  # the walk sees the tree
    broken = {m: v for m, targets in graph.items() if (v := violations(m, targets))}
    assert broken == {}


def test_there_are_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_checks_catch_what_they_look_for() -> None:
    # A checker that can never fail proves nothing: feed it the arrows it must refuse.
    known = {"core.records", "memory.store", "cli", "orchestrator.runner"}
    sneaky = "def f():\n    from memory.store import open_store\n    import cli\n"
    assert violations("critics.sandbox", imported(sneaky, known)) == ["cli", "memory.store"]
    assert violations("core.records", {"orchestrator.runner"}) == ["orchestrator.runner"]
    assert violations("cli", {"memory.store", "core.errors"}) == ["memory.store"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_help_imports_neither_torch_nor_transformers() -> None:
    probe = (
        "import sys\n"
        "sys.argv = ['selftaught', '--help']\n"
        "import cli\n"
        "try:\n"
        "    cli.typer_app()\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'litellm', 'chromadb', 'peft', 'trl')"
        " if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout
    assert "HEAVY []" in done.stdout
