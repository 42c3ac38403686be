"""What a received instance must pass before anything is stored, in order, with the limits they
use: its size, its header (`validation`), then its encoding and pixel data (`content_checks`).

A deflated dataset is inflated in a stream within the memory budget (`inflate`) and checked as
the Explicit VR Little Endian it inflates to; what is archived is still the dataset as received.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from common.decodable import CLASSIFIED_MODALITIES, DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_DEFLATE_RATIO
from ingest.content_checks import (
    check_decodable,
    check_encoding,
    check_first_frame_decodes,
    check_first_frame_header,
    check_pixel_data,
)
from ingest.inflate import inflated
from ingest.statuses import Failure
from ingest.validation import InstanceHeader, InvalidInstance, read_header, validate

if TYPE_CHECKING:  # ingest.ingestor runs these checks
    from ingest.ingestor import ReceivedInstance


@dataclass(frozen=True, slots=True)
class InstanceChecks:
    max_instance_bytes: int
    # SOP classes whose pixels the worker classifies, besides CLASSIFIED_MODALITIES.
    image_sop_classes: frozenset[str] = frozenset()
    decode_first_frame: bool = True
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    max_deflate_ratio: int = DEFAULT_MAX_DEFLATE_RATIO

    def check(self, received: ReceivedInstance) -> InstanceHeader:
        """The instance's header; `InvalidInstance` naming the first check it fails."""
        if received.size_bytes > self.max_instance_bytes:
            raise InvalidInstance(
                Failure.TOO_LARGE,
                f"{received.size_bytes} bytes exceed the limit of {self.max_instance_bytes}",
            )
        syntax = received.transfer_syntax_uid
        if syntax == DeflatedExplicitVRLittleEndian:
            # Inflated in a stream, never past the budget; checked as the explicit VR it inflates to.
            with inflated(
                received.source, max_bytes=self.max_decoded_bytes, max_ratio=self.max_deflate_ratio
            ) as (source, size):
                return self._check_dataset(received, source, size, ExplicitVRLittleEndian)
        return self._check_dataset(received, received.source, received.size_bytes, syntax)

    def _check_dataset(
        self, received: ReceivedInstance, source: Path | BinaryIO, size_bytes: int, syntax: str
    ) -> InstanceHeader:
        ds = read_header(source)
        header = validate(
            ds,
            requested_sop_class=received.requested_sop_class,
            requested_sop_instance=received.requested_sop_instance,
            context_sop_class=received.context_sop_class,
        )
        check_encoding(source, syntax)
        # What the worker classifies must be what it decodes; anything with pixels must fit the
        # budget before a decoder runs (common.decodable); only then is the first frame decoded.
        image = header.sop_class_uid in self.image_sop_classes or header.modality in CLASSIFIED_MODALITIES
        if image or "PixelData" in ds:
            check_decodable(ds, max_decoded_bytes=self.max_decoded_bytes, image=image)
            check_pixel_data(ds, transfer_syntax_uid=syntax, size_bytes=size_bytes)
            check_first_frame_header(source, ds, transfer_syntax_uid=syntax)
            if self.decode_first_frame:
                check_first_frame_decodes(source, transfer_syntax_uid=syntax)
        return header
