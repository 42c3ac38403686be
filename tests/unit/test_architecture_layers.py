"""Every import points down the layers of docs/architecture.md (function-level imports included).

tests/                         the suite: may import anything
fuzz/  benchmarks/  scripts/   tools that drive the system from outside, side by side, on the top
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
# Tools on top, side by side: hostile DICOM clients (fuzz/), benchmarks and maintenance scripts use
# any package of the house, kidneyct/ included; nothing in the house uses them, nor one tool another.
_HOUSE = frozenset(ALLOWED)
ALLOWED |= {"fuzz": _HOUSE, "benchmarks": _HOUSE, "scripts": _HOUSE}
ALLOWED["tests"] = frozenset(ALLOWED)  # the suite, outermost


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


def unplaced_folders(root: Path, allowed: dict[str, frozenset[str]]) -> list[str]:
    """Top-level folders holding Python (hidden and .gitignore'd ones aside) that have no layer."""
    ignored = {line.strip().strip("/") for line in _gitignore_lines(root)}
    return sorted(
        folder.name
        for folder in root.iterdir()
        if folder.is_dir()
        and not folder.name.startswith(".")
        and folder.name not in ignored
        and folder.name not in allowed
        and any(folder.rglob("*.py"))
    )


def _gitignore_lines(root: Path) -> list[str]:
    path = root / ".gitignore"
    return path.read_text().splitlines() if path.exists() else []


def test_every_top_level_python_folder_has_a_layer() -> None:
    """A new top-level folder with Python in it must be placed in a layer before it ships."""
    assert unplaced_folders(REPO, ALLOWED) == []


def test_a_folder_without_a_layer_is_reported(tmp_path: Path) -> None:
    """A new folder of Python is reported; an ignored, a hidden or a Python-free one is not."""
    for folder in ("storage", "newtool", "kidneyct-data", ".venv", "docs"):
        (tmp_path / folder).mkdir()
    for script in ("storage/db.py", "newtool/run.py", "kidneyct-data/x.py", ".venv/site.py"):
        (tmp_path / script).write_text("")
    (tmp_path / ".gitignore").write_text(".venv/\nkidneyct-data/\n")
    assert unplaced_folders(tmp_path, ALLOWED) == ["newtool"]


def test_every_installed_package_has_a_layer() -> None:
    """Every package pyproject.toml installs is in a layer (tools and tests are not installed)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {pattern.rstrip("*") for pattern in include} <= set(ALLOWED)


def test_an_upward_import_is_reported(tmp_path: Path) -> None:
    """The checker fails on storage importing the top layer, even from inside a function."""
    (tmp_path / "storage").mkdir()
    (tmp_path / "kidneyct").mkdir()
    (tmp_path / "storage" / "db.py").write_text(
        "import common.log\n\ndef url():\n    from kidneyct.settings import Settings\n    return Settings\n"
    )
    (tmp_path / "kidneyct" / "settings.py").write_text("import storage.db.engine\n")
    assert layer_violations(tmp_path, ALLOWED) == ["storage/db.py:4 imports kidneyct.settings"]


def test_the_house_does_not_import_its_tools(tmp_path: Path) -> None:
    """The top layer may not lean on a benchmark or a fuzzer; a tool may use the top layer."""
    (tmp_path / "kidneyct").mkdir()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "kidneyct" / "serve.py").write_text("from fuzz.wire import associate\n")
    (tmp_path / "benchmarks" / "run.py").write_text("from kidneyct.settings import Settings\n")
    assert layer_violations(tmp_path, ALLOWED) == ["kidneyct/serve.py:1 imports fuzz.wire"]


def test_side_by_side_packages_do_not_import_each_other(tmp_path: Path) -> None:
    """ingest/ and classifier/ share a layer: neither may import the other."""
    (tmp_path / "classifier").mkdir()
    (tmp_path / "classifier" / "worker.py").write_text("from ingest.catalog import Catalog\n")
    assert layer_violations(tmp_path, ALLOWED) == ["classifier/worker.py:1 imports ingest.catalog"]
