"""Destinations and the backoff schedule of the result sender: pure functions."""

from __future__ import annotations

import pytest

from delivery.destinations import Destination, parse_destination, parse_destinations
from delivery.scu import StoreOptions
from delivery.sender import SenderConfig


def test_destinations_are_parsed_from_the_setting() -> None:
    """`AE@host:port`, comma-separated, blanks ignored."""
    assert parse_destinations(" PACS@10.0.0.5:104, ORTHANC@pacs.local:4242 ,") == [
        Destination("PACS", "10.0.0.5", 104),
        Destination("ORTHANC", "pacs.local", 4242),
    ]
    assert parse_destinations("") == []
    assert str(parse_destination("A@[::1]:11112")) == "A@::1:11112"


@pytest.mark.parametrize(
    "text", ["PACS", "PACS@host", "@host:104", "PACS@host:0", "PACS@host:70000", "WAY_TOO_LONG_AE_TITLE@h:1"]
)
def test_a_bad_destination_is_refused_with_its_text(text: str) -> None:
    """A malformed destination fails at start, naming itself."""
    with pytest.raises(ValueError, match="result destination"):
        parse_destination(text)


def test_backoff_doubles_from_the_first_wait_up_to_the_longest() -> None:
    """After 1, 2, 3, ... failed attempts: 5, 10, 20, ... capped at the maximum."""
    config = SenderConfig(store=StoreOptions(calling_ae="KIDNEYCT"), retry_initial_s=5, retry_max_s=60)
    assert [config.backoff.after(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
