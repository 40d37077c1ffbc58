"""Layer rules. The package's layers (pyproject.toml [tool.importlinter], run with `lint-imports`) and no import cycle
(grimp). Read from the source (ast, nothing imported): the results store (plugins/llmd_bench/store/) is the only
code that imports SQLAlchemy or holds SQL text, and runtime/ the only code that compares runtime names. The DAG file
(dags/) and the UI plugin (plugins/llmd_bench_plugin.py) are checked with the package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp
import pytest

from conftest import ROOT
from llmd_bench.model.runtimes import RUNTIMES

PACKAGE = ROOT / "plugins" / "llmd_bench"
STORE = PACKAGE / "store"
RUNTIME = PACKAGE / "stack" / "runtime"
# SQL statements as they are written (upper-case keywords): prose says "select ... from" in lower case
SQL = re.compile(r"\bSELECT\b[\s\S]*?\bFROM\b|\bINSERT\s+INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
                 r"|\b(?:CREATE|ALTER|DROP)\s+(?:TABLE|INDEX|DATABASE)\b|\bCOPY\s+\w+\s*\(")


def sources() -> list[Path]:
    """Every Python module of the project's code: the package, the UI plugin and the DAG file(s)."""
    found = sorted((ROOT / "plugins").rglob("*.py")) + sorted((ROOT / "dags").rglob("*.py"))
    assert PACKAGE / "orchestration" / "airflow_dag.py" in found and ROOT / "plugins" / "llmd_bench_plugin.py" in found
    return found


def _inside(path: Path, folder: Path) -> bool:
    return folder in path.parents


def sqlalchemy_imports(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        out += [f"line {node.lineno}: import {n}" for n in names if n == "sqlalchemy" or n.startswith("sqlalchemy.")]
    return out


def sql_texts(tree: ast.AST) -> list[str]:
    """String constants (and the literal parts of f-strings, joined) that read as SQL statements."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
        else:
            continue
        found = SQL.search(text)
        if found:
            out.append(f"line {node.lineno}: {found.group(0)[:60]!r}")
    return out


def runtime_comparisons(tree: ast.AST) -> list[str]:
    """`x == "local"`, `"kubernetes" != x`, `x in ("local", ...)`: a decision on a runtime's name."""
    def names_a_runtime(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and node.value in RUNTIMES

    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands, operands[1:]):
            if isinstance(op, (ast.Eq, ast.NotEq, ast.Is, ast.IsNot)) and (names_a_runtime(left) or names_a_runtime(right)):
                out.append(f"line {node.lineno}: {ast.unparse(node)}")
            elif (isinstance(op, (ast.In, ast.NotIn)) and isinstance(right, (ast.Tuple, ast.List, ast.Set))
                  and any(names_a_runtime(e) for e in right.elts)):
                out.append(f"line {node.lineno}: {ast.unparse(node)}")
    return out


def violations(check, allowed: Path) -> dict[str, list[str]]:
    found = {}
    for path in sources():
        if _inside(path, allowed):
            continue
        hits = check(ast.parse(path.read_text(), filename=str(path)))
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    return found


def test_only_the_store_imports_sqlalchemy():
    assert violations(sqlalchemy_imports, STORE) == {}


def test_only_the_store_holds_sql_text():
    assert violations(sql_texts, STORE) == {}


def test_only_the_runtime_compares_runtime_names():
    """The runtime decides what its name means (runtimes.FACTS: simulated, in a cluster); nothing else asks the name."""
    assert violations(runtime_comparisons, RUNTIME) == {}


def test_the_store_and_the_runtime_are_where_those_things_live():
    """The rules above cannot pass by looking in the wrong place: the store holds SQL and imports SQLAlchemy, and
    runtime/ decides on names."""
    store = [ast.parse(p.read_text()) for p in STORE.rglob("*.py")]
    assert any(sqlalchemy_imports(t) for t in store) and any(sql_texts(t) for t in store)
    assert any(runtime_comparisons(ast.parse(p.read_text())) for p in RUNTIME.rglob("*.py"))


@pytest.mark.parametrize("source, check", [
    ("import sqlalchemy", sqlalchemy_imports),
    ("from sqlalchemy.orm import Session", sqlalchemy_imports),
    ("def f():\n    from sqlalchemy import text\n", sqlalchemy_imports),
    ('Q = "SELECT id FROM runs WHERE campaign = :c"', sql_texts),
    ('Q = f"""\nSELECT {cols}\nFROM cells"""', sql_texts),
    ('Q = "UPDATE level_results SET valid = false"', sql_texts),
    ('Q = "DELETE FROM cells"', sql_texts),
    ('Q = "INSERT INTO runs (campaign) VALUES (:c)"', sql_texts),
    ('ok = runtime == "local"', runtime_comparisons),
    ('ok = "kubernetes" != settings().runtime', runtime_comparisons),
    ('ok = run["runtime"] in ("local", "imported")', runtime_comparisons),
], ids=lambda v: v if isinstance(v, str) else "")
def test_each_rule_finds_what_it_forbids(source, check):
    assert check(ast.parse(source))


@pytest.mark.parametrize("source, check", [
    ("import sqlalchemy_utils_lookalike", sqlalchemy_imports),
    ('HELP = "select the cells from the campaign"', sql_texts),
    ('ok = campaign.serving.mode == "existing"', runtime_comparisons),
    ('choices = ["local", "kubernetes"]', runtime_comparisons),
])
def test_each_rule_leaves_alone_what_it_allows(source, check):
    assert not check(ast.parse(source))


def import_cycles(package: str) -> list[list[str]]:
    """The package's import cycles: each group of modules that import one another, directly or through others
    (strongly connected components of the module graph). Imports under `if TYPE_CHECKING:` are left out: they
    never run."""
    graph = grimp.build_graph(package, exclude_type_checking_imports=True)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []
    for root in edges:  # Tarjan's algorithm, iterative (no recursion limit on a deep graph)
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                nxt = edges[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    cycles.append(sorted(group))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return cycles


def test_the_package_has_no_import_cycle():
    """No module of llmd_bench imports itself back through others: the layers import downwards only."""
    assert import_cycles("llmd_bench") == []


def test_the_cycle_check_finds_a_cycle_through_three_modules(tmp_path, monkeypatch):
    pkg = tmp_path / "cyclic_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclic_pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from cyclic_pkg import c  # a function-local import is an import too\n")
    (pkg / "c.py").write_text("import cyclic_pkg.a\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cyclic_pkg import e\n")
    (pkg / "e.py").write_text("from cyclic_pkg import d\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("cyclic_pkg") == [["cyclic_pkg.a", "cyclic_pkg.b", "cyclic_pkg.c"]]


