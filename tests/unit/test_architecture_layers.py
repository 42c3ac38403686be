"""Every import points down the layers of docs/architecture.md (function-level imports included).

kidneyct/                      the top: commands, processes, wiring, settings
review/                        the review station: on training/ (labels as `kidneyct label` writes them)
training/                      on classifier/
ingest/  classifier/  delivery/  migrations/   side by side, none imports another
storage/                       archive, database, streams
common/                        logging, errors, metrics, health, the domain's vocabulary
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# What each package may import of ours (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "common": frozenset(),
    "storage": frozenset({"common"}),
    "migrations": frozenset({"common", "storage"}),
    "ingest": frozenset({"common", "storage"}),
    "classifier": frozenset({"common", "storage"}),
    "delivery": frozenset({"common", "storage"}),
    "training": frozenset({"common", "storage", "classifier"}),
    "review": frozenset({"common", "storage", "classifier", "training"}),
    "kidneyct": frozenset(
        {"common", "storage", "migrations", "ingest", "classifier", "delivery", "training", "review"}
    ),
}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every absolute import anywhere in `source`, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def layer_violations(root: Path, allowed: dict[str, frozenset[str]]) -> list[str]:
    """`path:line imports module` for each import of a package that `allowed` does not permit."""
    problems = []
    for package, may_import in allowed.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, module in imported_modules(path.read_text()):
                target = module.split(".")[0]
                if target in allowed and target != package and target not in may_import:
                    problems.append(f"{path.relative_to(root)}:{line} imports {module}")
    return problems


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    """The real tree: ground, storage, side-by-side packages, training, then the top layer only."""
    assert layer_violations(REPO, ALLOWED) == []


def test_every_installed_package_has_a_layer() -> None:
    """A new top-level package must be placed in a layer before it ships."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {pattern.rstrip("*") for pattern in include} == set(ALLOWED)


def test_an_upward_import_is_reported(tmp_path: Path) -> None:
    """The checker fails on storage importing the top layer, even from inside a function."""
    (tmp_path / "storage").mkdir()
    (tmp_path / "kidneyct").mkdir()
    (tmp_path / "storage" / "db.py").write_text(
        "import common.log\n\ndef url():\n    from kidneyct.settings import Settings\n    return Settings\n"
    )
    (tmp_path / "kidneyct" / "settings.py").write_text("import storage.db.engine\n")
    assert layer_violations(tmp_path, ALLOWED) == ["storage/db.py:4 imports kidneyct.settings"]


def test_side_by_side_packages_do_not_import_each_other(tmp_path: Path) -> None:
    """ingest/ and classifier/ share a layer: neither may import the other."""
    (tmp_path / "classifier").mkdir()
    (tmp_path / "classifier" / "worker.py").write_text("from ingest.catalog import Catalog\n")
    assert layer_violations(tmp_path, ALLOWED) == ["classifier/worker.py:1 imports ingest.catalog"]
