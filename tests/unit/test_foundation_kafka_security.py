"""Kafka TLS and SASL settings reach kafka-python's producer, consumer and admin options."""

from __future__ import annotations

from pathlib import Path

import pytest

from kidneyct.settings import Settings
from kidneyct.streams import kafka_connection


def test_tls_and_sasl_settings_become_client_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """CA, client certificate and key, SASL mechanism, user and password are all passed on."""
    env = {
        "KIDNEYCT_KAFKA_BOOTSTRAP": "broker-1:9093,broker-2:9093",
        "KIDNEYCT_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KIDNEYCT_KAFKA_SSL_CAFILE": str(tmp_path / "ca.pem"),
        "KIDNEYCT_KAFKA_SSL_CERTFILE": str(tmp_path / "client.pem"),
        "KIDNEYCT_KAFKA_SSL_KEYFILE": str(tmp_path / "client.key"),
        "KIDNEYCT_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "KIDNEYCT_KAFKA_SASL_USERNAME": "kidneyct",
        "KIDNEYCT_KAFKA_SASL_PASSWORD": "hunter2",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    connection = kafka_connection(Settings())
    options = connection.options()
    assert options["bootstrap_servers"] == ["broker-1:9093", "broker-2:9093"]
    assert options["security_protocol"] == "SASL_SSL"
    assert options["ssl_cafile"] == str(tmp_path / "ca.pem")
    assert options["ssl_certfile"] == str(tmp_path / "client.pem")
    assert options["ssl_keyfile"] == str(tmp_path / "client.key")
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "kidneyct"
    assert options["sasl_plain_password"] == "hunter2"
    assert "hunter2" not in repr(connection)


def test_plaintext_adds_no_security_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without TLS or SASL settings the options are the plain ones kafka-python defaults on."""
    monkeypatch.setenv("KIDNEYCT_KAFKA_BOOTSTRAP", "kafka:9092")
    options = kafka_connection(Settings()).options()
    assert not {k for k in options if k.startswith(("ssl_", "sasl_"))}
