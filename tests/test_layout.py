"""The house rules of ARCHITECTURE.md, read from the source: who may import whom, no circles.

    app -> model <- training        (tests and bench may import anything)

Every import statement counts, also those inside functions (the old train <-> evaluate circle
was a function-level import) and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"model": {"training", "app"}, "app": {"training"}, "training": {"app"}}

Graph = dict[str, set[str]]


def packages(root: Path) -> list[str]:
    """The top-level packages: folders at the root with an __init__.py."""
    return sorted(p.parent.name for p in root.glob("*/__init__.py"))


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, name: str, is_package: bool) -> Iterator[str]:
    """Every module name an import statement of module `name` may refer to."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, `level` steps up
                package = name.split(".") if is_package else name.split(".")[:-1]
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)  # `from pkg import mod`


def import_graph(root: Path) -> Graph:
    """module -> the project modules it imports, for every .py file of every top-level package."""
    files = {
        module_name(path, root): path
        for pkg in packages(root)
        for path in (root / pkg).rglob("*.py")
    }
    graph: Graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = imported(tree, name, path.name == "__init__.py")
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def forbidden_imports(graph: Graph) -> list[str]:
    return sorted(
        f"{source} imports {target}"
        for source, targets in graph.items()
        for target in targets
        if target.split(".")[0] in FORBIDDEN.get(source.split(".")[0], set())
    )


def find_cycle(graph: Graph) -> list[str]:
    """One import circle as [a, b, ..., a], or [] when there is none (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def test_packages_import_one_way() -> None:
    graph = import_graph(ROOT)
    assert {"app", "model", "training"} <= set(packages(ROOT))
    assert forbidden_imports(graph) == []


def test_no_import_circles() -> None:
    assert find_cycle(import_graph(ROOT)) == []


def test_training_reaches_the_model_and_the_app_does_too() -> None:
    """The graph is not vacuously clean: the expected edges are there."""
    graph = import_graph(ROOT)
    assert "model.network" in graph["training.fit"] | graph["training.build"]
    assert "model.checkpoint" in graph["app.engine"]
    assert "training.evaluate" in graph["training.fit"]  # fit uses evaluation, never the reverse


@pytest.fixture
def bad_tree(tmp_path: Path) -> Path:
    """A small project breaking every rule: model -> training, a circle, a relative import."""
    for pkg in ("model", "training", "app"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "model" / "net.py").write_text("def f():\n    from training import fit\n")
    (tmp_path / "training" / "fit.py").write_text("import training.evaluate\n")
    (tmp_path / "training" / "evaluate.py").write_text("from . import train\n")
    (tmp_path / "training" / "train.py").write_text("from training.fit import x\n")
    (tmp_path / "app" / "main.py").write_text("from model.net import f\n")
    return tmp_path


def test_the_checks_catch_a_bad_tree(bad_tree: Path) -> None:
    graph = import_graph(bad_tree)
    assert forbidden_imports(graph) == [
        "model.net imports training",
        "model.net imports training.fit",
    ]
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[1:]) == ["training.evaluate", "training.fit", "training.train"]


def test_the_service_needs_only_the_runtime_dependencies() -> None:
    """app/ and model/ import nothing from the `train` extra or the ImageNet weights package,
    so the service image (which installs `dependencies` alone) has everything it imports."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    train = {_dist_name(spec) for spec in project["optional-dependencies"]["train"]}
    allowed = _with_requirements({_dist_name(spec) for spec in project["dependencies"]})
    assert not allowed & train
    distributions = importlib.metadata.packages_distributions()
    needed = set()
    for pkg in ("app", "model"):
        for path in (ROOT / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for name in imported(tree, module_name(path, ROOT), path.name == "__init__.py"):
                top = name.split(".")[0]
                if top and top not in sys.stdlib_module_names and top not in packages(ROOT):
                    needed |= {_dist_name(d) for d in distributions.get(top, [top])}
    assert needed <= allowed, needed - allowed
    assert {"torch", "fastapi"} <= needed  # the scan sees third-party imports at all


def _with_requirements(names: set[str]) -> set[str]:
    """The installed distributions of `names` and, recursively, of their requirements (those of
    extras aside): what `pip install` of the names brings."""
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:  # a marker left it out here
            continue
        seen.add(name)
        todo += [_dist_name(r) for r in requires if "extra ==" not in r]
    return seen


def _dist_name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_console_scripts_point_at_entry_points(capsys: pytest.CaptureFixture[str]) -> None:
    """viraliency, viraliency-train, -evaluate and -serve name functions that exist; the
    training CLIs answer --help (tests/cli checks the `viraliency` command's own --help,
    and that `viraliency-serve --help` starts no server)."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {
        "viraliency",
        "viraliency-train",
        "viraliency-evaluate",
        "viraliency-serve",
    }
    for name, target in scripts.items():
        module, function = target.split(":")
        entry = getattr(importlib.import_module(module), function)
        assert callable(entry)
        if name in ("viraliency-train", "viraliency-evaluate"):
            with pytest.raises(SystemExit) as exit_info:
                entry(["--help"])
            assert exit_info.value.code == 0
            assert "--data" in capsys.readouterr().out
