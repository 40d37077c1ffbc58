"""Layer rules. The package's layers (pyproject.toml [tool.importlinter], run with `lint-imports`) and no import cycle
(grimp). Read from the source (ast, nothing imported): the results store (plugins/llmd_bench/store/) is the only
code that imports SQLAlchemy or holds SQL text, and runtime/ the only code that compares runtime names. The DAG file
(dags/) and the UI plugin (plugins/llmd_bench_plugin.py) are checked with the package.

The integration tier of this topic (real local servers, processes or PostgreSQL, a few seconds each);
the rest is tests/unit/test_layering.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def lint_imports(cwd: Path, config: Path | None = None, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (path, ROOT / "plugins") if p)}
    args = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]
    return subprocess.run(args + (["--config", str(config)] if config else []), cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_layer_contracts_are_kept():
    """model < measure < stack < store < report, plan < integrations < steps < orchestration < cli: each layer imports
    only from the layers below it; Airflow is imported only at the edge; integrations do not import one another."""
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout and "Layers:" in done.stdout


def test_the_layer_contract_finds_a_lower_layer_importing_a_higher_one(tmp_path):
    pkg = tmp_path / "layered_pkg"
    for layer in ("top", "bottom"):
        (pkg / layer).mkdir(parents=True)
        (pkg / layer / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "top" / "a.py").write_text("from layered_pkg.bottom import b\n")
    (pkg / "bottom" / "b.py").write_text("def f():\n    from layered_pkg.top import a  # upwards, even in a function\n")
    config = tmp_path / "pyproject.toml"
    config.write_text('[tool.importlinter]\nroot_package = "layered_pkg"\n\n[[tool.importlinter.contracts]]\n'
                      'name = "layers"\ntype = "layers"\nlayers = ["layered_pkg.top", "layered_pkg.bottom"]\n')
    done = lint_imports(tmp_path, config, tmp_path)
    assert done.returncode != 0 and "1 broken" in done.stdout, done.stdout + done.stderr
    assert "layered_pkg.bottom.b -> layered_pkg.top.a" in done.stdout
