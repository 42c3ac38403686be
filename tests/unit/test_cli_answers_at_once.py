"""Wrong inputs are answered before TensorFlow/Keras load: one line, in about a second, not half a minute.

Each check runs in a fresh interpreter, so "Keras was not imported" is a fact about the command and not
about what an earlier test imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kidneyct.cli import SUBCOMMANDS

HEAVY = ("tensorflow", "keras", "jax")

# Runs in the child: each case on its own data folder, optionally migrated; prints one JSON line per case.
_CHILD = """
import contextlib, io, json, os, sys
from kidneyct.cli import main
HEAVY = json.loads(sys.argv[2])
for case in json.loads(sys.argv[1]):
    os.environ["KIDNEYCT_DATA_DIR"] = case["data_dir"]
    if case["schema"]:
        os.makedirs(case["data_dir"], exist_ok=True)
        import migrations
        from kidneyct.settings import Settings
        migrations.upgrade(Settings().resolved_database_url())
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(case["argv"])
        except SystemExit as exc:
            code = exc.code
    loaded = sorted(m for m in HEAVY if m in sys.modules)
    print(json.dumps({"argv": case["argv"], "code": code, "stderr": err.getvalue(), "loaded": loaded}))
"""


def _run_child(cases: list[dict[str, object]], cwd: Path) -> list[dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIDNEYCT_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(cases), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_help_of_every_command_does_not_import_keras(tmp_path: Path) -> None:
    """`kidneyct --help` and every subcommand's `--help` leave tensorflow, keras and jax unimported."""
    data = str(tmp_path / "data")
    cases: list[dict[str, object]] = [{"argv": ["--help"], "data_dir": data, "schema": False}]
    cases += [{"argv": [name, "--help"], "data_dir": data, "schema": False} for name in sorted(SUBCOMMANDS)]
    for outcome in _run_child(cases, tmp_path):
        assert outcome["code"] == 0, outcome
        assert outcome["loaded"] == [], outcome


WRONG_INPUTS: list[tuple[list[str], bool, str]] = [
    (["label", "--study", "not a uid", "--class", "normal"], True, "is not a DICOM UID"),
    (["reprocess", "--study", "not a uid"], True, "is not a DICOM UID"),
    (["reprocess", "--all", "--model-version", "no-such"], True, "no model version 'no-such'"),
    (["train"], False, "no kidneyct schema"),
    (["train"], True, "nothing to train on"),
    (["worker"], False, "no kidneyct schema"),
    (["evaluate", "empty", "--model-version", "no-such"], True, "holds no file"),
    (["evaluate", "folder", "--model-version", "no-such"], True, "no model version 'no-such'"),
    (["models", "export", "no-such", "out"], True, "no model version 'no-such'"),
    (["models", "export", "no-such", "out"], False, "no kidneyct schema"),
]


@pytest.mark.parametrize(
    ("argv", "schema", "answer"), WRONG_INPUTS, ids=[" ".join(c[0]) for c in WRONG_INPUTS]
)
def test_wrong_input_is_one_line_before_keras(
    argv: list[str], schema: bool, answer: str, tmp_path: Path
) -> None:
    """A wrong argument, an empty folder, a missing schema or nothing to train on: exit 1, one
    `Error:` line naming the problem, and Keras never imported."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "folder" / "Normal").mkdir(parents=True)
    (tmp_path / "folder" / "Normal" / "a.png").write_bytes(b"not read before the version is found")
    case = {"argv": argv, "data_dir": str(tmp_path / "data"), "schema": schema}
    [outcome] = _run_child([case], tmp_path)
    lines = [line for line in str(outcome["stderr"]).splitlines() if line.strip()]
    assert outcome["code"] == 1, outcome
    assert len(lines) == 1 and lines[0].startswith("Error: ") and answer in lines[0], outcome
    assert outcome["loaded"] == [], outcome
