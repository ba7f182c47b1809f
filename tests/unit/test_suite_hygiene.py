"""The test suite itself (issue 19.5): every test asserts something.

A test "asserts" when its body holds an `assert`, a `pytest.raises` / `pytest.fail`, or a call
to a helper that does (a function of the same module, or one imported from `tests.*`,
followed through helpers calling helpers). A test that only makes calls passes whatever
they return, and a check that runs in a fixture's teardown is reported against no test.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
PYTEST_CHECKS = {"raises", "fail", "warns"}

pytestmark = pytest.mark.unit


@functools.cache
def _module(path: Path) -> tuple[dict[str, ast.AST], dict[str, tuple[Path, str]]]:
    """(functions defined at module level, names imported from tests.* -> (file, name))."""
    tree = ast.parse(path.read_text(), str(path))
    functions: dict[str, ast.AST] = {}
    imported: dict[str, tuple[Path, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            functions[node.name] = node
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests"):
            source = ROOT / Path(*str(node.module).split("."))
            file = source.with_suffix(".py") if source.with_suffix(".py").exists() else None
            if file is None and (source / "__init__.py").exists():
                file = source / "__init__.py"
            for alias in node.names:
                if file is not None:
                    imported[alias.asname or alias.name] = (file, alias.name)
    return functions, imported


def _asserts(path: Path, node: ast.AST, seen: frozenset[tuple[Path, str]] = frozenset()) -> bool:
    functions, imported = _module(path)
    for child in ast.walk(node):
        if isinstance(child, ast.Assert):
            return True
        if not isinstance(child, ast.Call):
            continue
        func = child.func
        if isinstance(func, ast.Attribute) and func.attr in PYTEST_CHECKS:
            return True
        name = func.id if isinstance(func, ast.Name) else None
        if name is None:
            continue
        if name in functions and (path, name) not in seen:
            if _asserts(path, functions[name], seen | {(path, name)}):
                return True
        elif name in imported and imported[name] not in seen:
            file, original = imported[name]
            helper = _module(file)[0].get(original)
            if helper is not None and _asserts(file, helper, seen | {imported[name]}):
                return True
    return False


def _tests_without_assertions() -> list[str]:
    missing = []
    for path in sorted(TESTS.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if node.name.startswith("test_") and not _asserts(path, node):
                missing.append(f"{path.relative_to(ROOT)}::{node.name}")
    return missing


def test_every_test_asserts_something() -> None:
    assert _tests_without_assertions() == []


def test_the_check_sees_a_test_without_an_assertion(tmp_path: Path) -> None:
    source = tmp_path / "test_example.py"
    source.write_text(
        "import pytest\n"
        "def _check(x):\n    assert x\n"
        "def _call(x):\n    return x\n"
        "def test_calls_only():\n    _call(1)\n"
        "def test_via_helper():\n    _check(1)\n"
        "def test_raises():\n    with pytest.raises(ValueError):\n        int('x')\n"
    )
    tree = ast.parse(source.read_text())
    verdicts = {
        n.name: _asserts(source, n)
        for n in tree.body
        if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    }
    assert verdicts == {"test_calls_only": False, "test_via_helper": True, "test_raises": True}
