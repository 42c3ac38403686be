"""Where results go: `AE@host:port` destinations, parsed and checked once at start."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path

_DESTINATION = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:@]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


@dataclass(frozen=True, slots=True)
class Destination:
    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_destination(text: str) -> Destination:
    """`AE@host:port` (AE title of at most 16 characters); ValueError says what is wrong."""
    match = _DESTINATION.match(text.strip())
    if match is None:
        raise ValueError(f"result destination {text!r} is not AE@host:port")
    port = int(match["port"])
    ae = match["ae"].strip()
    if not ae or not 0 < port < 65536 or "\\" in ae:
        raise ValueError(f"result destination {text!r} has a bad AE title or port")
    return Destination(ae_title=ae, host=match["host"].strip("[]"), port=port)


def parse_destinations(text: str) -> list[Destination]:
    """The comma-separated setting; empty means no destination."""
    return [parse_destination(part) for part in text.split(",") if part.strip()]


def make_client_tls_context(*, ca: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """TLS 1.2+, the destination's certificate checked against `ca`; ours presented when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(certfile=cert, keyfile=key)
    return context
