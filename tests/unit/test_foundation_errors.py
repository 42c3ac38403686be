"""Setup mistakes end a command with one clear line and a non-zero status, never a traceback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from classifier.model.device import Device, DeviceError, require_device
from kidneyct.cli import cli


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIDNEYCT_DATA_DIR", str(tmp_path / "data"))
    for name in ("KIDNEYCT_DATABASE_URL", "KIDNEYCT_KAFKA_BOOTSTRAP", "KIDNEYCT_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)


def _run(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args)


def _one_clear_line(result: Result) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("KIDNEYCT_LOG_LEVEL", "loud", "KIDNEYCT_LOG_LEVEL: Input should be 'debug'"),
        ("KIDNEYCT_LOG_FORMAT", "xml", "KIDNEYCT_LOG_FORMAT: Input should be 'auto'"),
        ("KIDNEYCT_DICOM_PORT", "70000", "KIDNEYCT_DICOM_PORT: Input should be less than or equal to 65535"),
        ("KIDNEYCT_METRICS_PORT", "-1", "KIDNEYCT_METRICS_PORT: Input should be greater than or equal to 0"),
        ("KIDNEYCT_BATCH_SIZE", "many", "KIDNEYCT_BATCH_SIZE: Input should be a valid integer"),
        ("KIDNEYCT_KAFKA_SECURITY_PROTOCOL", "TLS", "KIDNEYCT_KAFKA_SECURITY_PROTOCOL: Input should be"),
        ("KIDNEYCT_DEVICE", "cuda:0", "KIDNEYCT_DEVICE: must be `cpu` or `gpu:N`"),
        (
            "KIDNEYCT_STUDY_ABNORMAL_MIN_PROBABILITY",
            "1.5",
            "KIDNEYCT_STUDY_ABNORMAL_MIN_PROBABILITY: Input should be",
        ),
    ],
)
def test_bad_environment_value_is_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    """A bad KIDNEYCT_* value names its variable and what is allowed."""
    monkeypatch.setenv(variable, value)
    assert expected in _one_clear_line(_run(["db", "current"]))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://kidney:hunter2@db/kidneyct", "name the driver: postgresql+psycopg://"),
        ("not a url at all", "not a database URL"),
        ("oracle+nosuchdriver://kidney:hunter2@db/x", "no installed driver"),
    ],
)
def test_bad_database_url_is_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    """`postgres://` and malformed URLs are refused at start-up; the password is not repeated."""
    monkeypatch.setenv("KIDNEYCT_DATABASE_URL", url)
    line = _one_clear_line(_run(["db", "current"]))
    assert "KIDNEYCT_DATABASE_URL" in line and expected in line
    assert "hunter2" not in line


def test_models_list_without_a_database_says_to_migrate() -> None:
    """`models list` before `db upgrade` says to run it."""
    line = _one_clear_line(_run(["models", "list"]))
    assert "kidneyct db upgrade" in line


def test_label_without_class_asks_for_it() -> None:
    """`label --study X` without --class names the missing option and the classes."""
    line = _one_clear_line(_run(["label", "--study", "1.2.3"]))
    assert "--class" in line and "Cyst, Normal, Stone, Tumor" in line


def test_listen_without_schema_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the embedded queue, `listen` before `db upgrade` refuses instead of answering every C-STORE 0xA700."""
    monkeypatch.setenv("KIDNEYCT_DICOM_PORT", "0")
    line = _one_clear_line(_run(["listen"]))
    assert "run `kidneyct db upgrade` first" in line


def _migrated() -> None:
    assert _run(["db", "upgrade"]).exit_code == 0


def test_listener_port_in_use_is_one_line(monkeypatch: pytest.MonkeyPatch, busy_port: int) -> None:
    """A DICOM port already taken names the port and the reason."""
    _migrated()
    monkeypatch.setenv("KIDNEYCT_DICOM_HOST", "127.0.0.1")
    monkeypatch.setenv("KIDNEYCT_DICOM_PORT", str(busy_port))
    line = _one_clear_line(_run(["listen"]))
    assert f"cannot bind the DICOM listener to 127.0.0.1:{busy_port}" in line
    assert "in use" in line


def test_metrics_port_in_use_is_one_line(monkeypatch: pytest.MonkeyPatch, busy_port: int) -> None:
    """A metrics port already taken names the port and the reason."""
    _migrated()
    monkeypatch.setenv("KIDNEYCT_DICOM_PORT", "0")
    monkeypatch.setenv("KIDNEYCT_METRICS_HOST", "127.0.0.1")
    monkeypatch.setenv("KIDNEYCT_METRICS_PORT", str(busy_port))
    line = _one_clear_line(_run(["listen"]))
    assert f"cannot bind the metrics endpoint to 127.0.0.1:{busy_port}" in line


@pytest.mark.slow  # waits out kafka-python's connection timeout (about 30 s)
def test_kafka_init_without_a_broker_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """`kafka init` against a port where no broker listens fails with one line naming the bootstrap."""
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("KIDNEYCT_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")
    line = _one_clear_line(_run(["kafka", "init"]))
    assert f"cannot create the topics on 127.0.0.1:{port}" in line


def test_gpu_asked_for_but_not_seen_is_refused() -> None:
    """gpu:N with no GPU visible to the backend is an error; cpu and a visible GPU pass."""
    with pytest.raises(DeviceError, match="gpu:1 was asked for"):
        require_device(Device("gpu", 1), "tensorflow", count_gpus=lambda _backend: 0)
    require_device(Device("gpu", 1), "tensorflow", count_gpus=lambda _backend: 1)
    require_device(Device("cpu"), "tensorflow", count_gpus=lambda _backend: 0)
