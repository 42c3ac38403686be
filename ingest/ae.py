"""Building the application entity: what it accepts (SOP classes and transfer syntaxes), its limits
and timeouts, and the optional TLS context."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydicom import uid as pydicom_uid
from pydicom.uid import UID, CTImageStorage, EnhancedCTImageStorage
from pynetdicom import AE

from common.vocabulary import is_valid_uid

log = structlog.get_logger(__name__)

VERIFICATION = UID("1.2.840.10008.1.1")  # C-ECHO
# Ours, not pynetdicom's (docs/conformance.md): a UUID-derived UID (PS3.5 B.2), fixed once.
IMPLEMENTATION_CLASS_UID = UID("2.25.49157832409628103983691432886717942620")
IMPLEMENTATION_VERSION_NAME = "KIDNEYCT_0.1"
CT_SOP_CLASSES: tuple[str, ...] = (CTImageStorage, EnhancedCTImageStorage)

# Every transfer syntax the classifier can decode later (pydicom + pylibjpeg plugins); datasets
# are stored as received, so accepting one we could not decode would only defer the failure.
ACCEPTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    pydicom_uid.ExplicitVRLittleEndian,
    pydicom_uid.ImplicitVRLittleEndian,
    pydicom_uid.DeflatedExplicitVRLittleEndian,
    pydicom_uid.JPEGBaseline8Bit,
    pydicom_uid.JPEGExtended12Bit,
    pydicom_uid.JPEGLossless,
    pydicom_uid.JPEGLosslessSV1,
    pydicom_uid.JPEGLSLossless,
    pydicom_uid.JPEGLSNearLossless,
    pydicom_uid.JPEG2000Lossless,
    pydicom_uid.JPEG2000,
    pydicom_uid.RLELossless,
)


def parse_sop_classes(text: str) -> list[str]:
    """The `extra_storage_sop_classes` setting as UIDs; raises ValueError naming a bad one."""
    uids = [part.strip() for part in text.split(",") if part.strip()]
    for uid in uids:
        if not is_valid_uid(uid):
            raise ValueError(f"extra storage SOP class {uid!r} is not a valid UID")
    return uids


@dataclass(frozen=True)
class AEOptions:
    ae_title: str
    extra_sop_classes: tuple[str, ...] = ()
    max_associations: int = 16
    max_pending: int = 64
    max_pdu_size: int = 1024 * 1024
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 60.0


def build_ae(options: AEOptions) -> AE:
    """An AE that answers C-ECHO and accepts C-STORE of CT, Enhanced CT and the extra classes."""
    ae = AE(ae_title=options.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    # pynetdicom counts connections that have not even sent A-ASSOCIATE-RQ against this limit, so
    # idle sockets could lock senders out: `AssociationSlots` enforces the real limit on admitted
    # associations, and `ServerLimits.max_pending` bounds the rest. This is only a backstop.
    ae.maximum_associations = options.max_associations + options.max_pending + 1
    ae.maximum_pdu_size = options.max_pdu_size
    ae.acse_timeout = options.acse_timeout_s
    ae.dimse_timeout = options.dimse_timeout_s
    ae.network_timeout = options.network_timeout_s
    # Defence in depth: `handle_requested` rejects a wrong called AE first, with a log line.
    ae.require_called_aet = True
    ae.add_supported_context(VERIFICATION)
    for sop_class in dict.fromkeys((*CT_SOP_CLASSES, *options.extra_sop_classes)):
        ae.add_supported_context(UID(sop_class), list(ACCEPTED_TRANSFER_SYNTAXES))
    return ae


class ServerTLSContext(ssl.SSLContext):
    """A server TLS context that says what to call when a handshake fails.

    The handshake itself runs in each connection's own thread, bounded by the establishment
    deadline and logged with the peer's address (`ingest.server.HardenedAssociationServer`),
    never in the accept loop where one silent client would hold up every other.
    """

    handshake_timeout_s: float = 10.0
    on_handshake_failure: Callable[[str], None] | None = None


def make_tls_context(
    *, cert: Path, key: Path, ca: Path | None, handshake_timeout_s: float = 10.0
) -> ServerTLSContext:
    """TLS 1.2+ with our certificate; with `ca`, clients must present a certificate it signed."""
    context = ServerTLSContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=cert, keyfile=key)
    if ca is not None:
        context.load_verify_locations(cafile=ca)
        context.verify_mode = ssl.CERT_REQUIRED
    context.handshake_timeout_s = handshake_timeout_s
    return context
