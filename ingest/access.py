"""Who may associate with the listener: the called AE title must be ours, and an optional
allow-list names the calling AE titles, each optionally tied to an address or network.

The allow-list setting reads `AE1,AE2@10.0.0.5,AE3@10.1.0.0/16`: a bare title is allowed from
anywhere; a title may be listed several times with different addresses. Empty allows every caller.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from ingest import statuses

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Denial(StrEnum):
    """Why an association was rejected; the `reason` of the log event and the metric label."""

    CALLED_AE_UNKNOWN = "called_ae_unknown"
    CALLING_AE_NOT_ALLOWED = "calling_ae_not_allowed"
    ADDRESS_NOT_ALLOWED = "address_not_allowed"

    @property
    def diagnostic(self) -> int:
        """The A-ASSOCIATE-RJ diagnostic (PS3.8 7.1.1.9) sent to the peer."""
        if self is Denial.CALLED_AE_UNKNOWN:
            return statuses.DIAG_CALLED_AE_NOT_RECOGNISED
        # An AE calling from the wrong address is told only that its title is not recognised.
        return statuses.DIAG_CALLING_AE_NOT_RECOGNISED


@dataclass(frozen=True, slots=True)
class AllowedPeer:
    ae_title: str
    network: IPNetwork | None = None  # None: from any address

    def admits(self, address: str) -> bool:
        if self.network is None:
            return True
        try:
            return ipaddress.ip_address(address) in self.network
        except ValueError:
            return False


def parse_allow_list(text: str) -> list[AllowedPeer]:
    """Parse the `allowed_calling_aes` setting; raises ValueError naming the bad entry."""
    peers: list[AllowedPeer] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        title, _, host = entry.partition("@")
        title = title.strip()
        if not title or len(title) > 16:
            raise ValueError(f"allowed calling AE entry {entry!r}: an AE title has 1 to 16 characters")
        network: IPNetwork | None = None
        if host.strip():
            try:
                network = ipaddress.ip_network(host.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(f"allowed calling AE entry {entry!r}: {exc}") from exc
        peers.append(AllowedPeer(title, network))
    return peers


class AccessPolicy:
    def __init__(self, *, ae_title: str, allowed: Sequence[AllowedPeer] = ()) -> None:
        self.ae_title = ae_title.strip()
        self._allowed = tuple(allowed)

    @classmethod
    def from_setting(cls, *, ae_title: str, allowed_calling_aes: str) -> AccessPolicy:
        return cls(ae_title=ae_title, allowed=parse_allow_list(allowed_calling_aes))

    def check(self, *, called_ae: str, calling_ae: str, address: str) -> Denial | None:
        """None when the association may proceed, else why it may not."""
        if called_ae.strip() != self.ae_title:
            return Denial.CALLED_AE_UNKNOWN
        if not self._allowed:
            return None
        same_title = [p for p in self._allowed if p.ae_title == calling_ae.strip()]
        if not same_title:
            return Denial.CALLING_AE_NOT_ALLOWED
        if not any(p.admits(address) for p in same_title):
            return Denial.ADDRESS_NOT_ALLOWED
        return None
