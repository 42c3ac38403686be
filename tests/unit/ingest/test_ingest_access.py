"""Who may associate (ingest/access.py)."""

from __future__ import annotations

import pytest

from ingest import statuses
from ingest.access import AccessPolicy, Denial, parse_allow_list


def test_called_ae_must_be_ours() -> None:
    """Any other called AE title is denied, whatever the allow-list."""
    policy = AccessPolicy(ae_title="KIDNEYCT")
    assert policy.check(called_ae="OTHER", calling_ae="PACS", address="10.0.0.1") is Denial.CALLED_AE_UNKNOWN
    assert policy.check(called_ae="KIDNEYCT", calling_ae="PACS", address="10.0.0.1") is None


def test_empty_allow_list_admits_every_caller() -> None:
    """Without an allow-list, any calling AE from any address is admitted."""
    policy = AccessPolicy.from_setting(ae_title="KIDNEYCT", allowed_calling_aes=" , ")
    assert policy.check(called_ae="KIDNEYCT", calling_ae="ANY", address="192.0.2.7") is None


def test_allow_list_by_title_and_address() -> None:
    """Titles are checked, then addresses (single host or network) for titles bound to them."""
    policy = AccessPolicy.from_setting(
        ae_title="KIDNEYCT", allowed_calling_aes="PACS, MODALITY@10.1.0.0/16,CT1@192.0.2.5"
    )
    check = policy.check
    assert check(called_ae="KIDNEYCT", calling_ae="PACS", address="203.0.113.9") is None
    assert check(called_ae="KIDNEYCT", calling_ae="MODALITY", address="10.1.200.3") is None
    assert (
        check(called_ae="KIDNEYCT", calling_ae="MODALITY", address="10.2.0.1") is Denial.ADDRESS_NOT_ALLOWED
    )
    assert check(called_ae="KIDNEYCT", calling_ae="CT1", address="192.0.2.5") is None
    assert check(called_ae="KIDNEYCT", calling_ae="CT1", address="192.0.2.6") is Denial.ADDRESS_NOT_ALLOWED
    assert (
        check(called_ae="KIDNEYCT", calling_ae="STRANGER", address="10.1.0.1")
        is Denial.CALLING_AE_NOT_ALLOWED
    )


def test_same_title_from_several_addresses() -> None:
    """A title listed twice is admitted from either address."""
    policy = AccessPolicy.from_setting(ae_title="KIDNEYCT", allowed_calling_aes="PACS@10.0.0.1,PACS@10.0.0.2")
    assert policy.check(called_ae="KIDNEYCT", calling_ae="PACS", address="10.0.0.2") is None


@pytest.mark.parametrize("entry", ["@10.0.0.1", "PACS@not-an-address", "WAY_TOO_LONG_AE_TITLE"])
def test_bad_allow_list_entry_is_a_clear_error(entry: str) -> None:
    """A malformed entry fails at start-up with the entry named."""
    with pytest.raises(ValueError, match="allowed calling AE entry"):
        parse_allow_list(entry)


def test_denials_map_to_association_reject_diagnostics() -> None:
    """Each denial sends a standard A-ASSOCIATE-RJ diagnostic."""
    assert Denial.CALLED_AE_UNKNOWN.diagnostic == statuses.DIAG_CALLED_AE_NOT_RECOGNISED
    assert Denial.CALLING_AE_NOT_ALLOWED.diagnostic == statuses.DIAG_CALLING_AE_NOT_RECOGNISED
    assert Denial.ADDRESS_NOT_ALLOWED.diagnostic == statuses.DIAG_CALLING_AE_NOT_RECOGNISED
