"""DICOM C-STORE statuses we answer, and the one map from a failure reason to its status.

Statuses follow PS3.4 B.2.3 (Storage Service Class) and PS3.7 C (general statuses). A failure
the sender should retry (our archive or broker is down) is "Refused: Out of Resources"; a dataset
we can never store gets an Error status that names what is wrong with it.
"""

from __future__ import annotations

from enum import StrEnum

SUCCESS = 0x0000
# Refused: Out of Resources (A7xx). The archive or the event stream failed: retry later.
OUT_OF_RESOURCES = 0xA700
# Refused: Out of Resources, sub-code for an instance larger than `max_instance_bytes`.
OUT_OF_RESOURCES_TOO_LARGE = 0xA701
# Error: Data Set does not match SOP Class (A9xx).
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
# Error: Cannot understand (Cxxx); sub-codes say what we could not understand.
CANNOT_UNDERSTAND = 0xC000
CANNOT_UNDERSTAND_MISSING_UID = 0xC001
CANNOT_UNDERSTAND_INVALID_UID = 0xC002
CANNOT_UNDERSTAND_SOP_INSTANCE_MISMATCH = 0xC003
CANNOT_UNDERSTAND_PIXEL_DATA = 0xC004
CANNOT_UNDERSTAND_ENCODING = 0xC005


class Failure(StrEnum):
    """Why a C-STORE was not stored; also the `reason` label of the rejection metric and log."""

    UNDECODABLE = "undecodable"
    MISSING_UID = "missing_uid"
    INVALID_UID = "invalid_uid"
    SOP_CLASS_MISMATCH = "sop_class_mismatch"
    SOP_INSTANCE_MISMATCH = "sop_instance_mismatch"
    PIXEL_DATA_INVALID = "pixel_data_invalid"
    # Decoding it would take more memory than `max_decoded_bytes` (common.decodable): never decoded.
    DECODED_TOO_LARGE = "decoded_too_large"
    # An image the classifier does not decode (common.decodable.check_supported_image).
    UNSUPPORTED_IMAGE = "unsupported_image"
    ENCODING_MISMATCH = "encoding_mismatch"
    TOO_LARGE = "too_large"
    ARCHIVE_FAILED = "archive_failed"
    PUBLISH_FAILED = "publish_failed"
    INTERNAL_ERROR = "internal_error"


STATUS_FOR_FAILURE: dict[Failure, int] = {
    Failure.UNDECODABLE: CANNOT_UNDERSTAND,
    Failure.MISSING_UID: CANNOT_UNDERSTAND_MISSING_UID,
    Failure.INVALID_UID: CANNOT_UNDERSTAND_INVALID_UID,
    Failure.SOP_CLASS_MISMATCH: DATASET_DOES_NOT_MATCH_SOP_CLASS,
    Failure.SOP_INSTANCE_MISMATCH: CANNOT_UNDERSTAND_SOP_INSTANCE_MISMATCH,
    Failure.PIXEL_DATA_INVALID: CANNOT_UNDERSTAND_PIXEL_DATA,
    Failure.DECODED_TOO_LARGE: CANNOT_UNDERSTAND_PIXEL_DATA,
    Failure.UNSUPPORTED_IMAGE: CANNOT_UNDERSTAND_PIXEL_DATA,
    Failure.ENCODING_MISMATCH: CANNOT_UNDERSTAND_ENCODING,
    Failure.TOO_LARGE: OUT_OF_RESOURCES_TOO_LARGE,
    Failure.ARCHIVE_FAILED: OUT_OF_RESOURCES,
    Failure.PUBLISH_FAILED: OUT_OF_RESOURCES,
    # A bug of ours must never read as success, and a retry may well succeed.
    Failure.INTERNAL_ERROR: OUT_OF_RESOURCES,
}

# A-ASSOCIATE-RJ parameters (PS3.8 7.1.1.9): (result, source, diagnostic).
REJECTED_PERMANENT = 0x01
REJECTED_TRANSIENT = 0x02
SOURCE_SERVICE_USER = 0x01
SOURCE_SERVICE_PROVIDER_PRESENTATION = 0x03
DIAG_LOCAL_LIMIT_EXCEEDED = 0x02
DIAG_NO_REASON = 0x01
DIAG_CALLING_AE_NOT_RECOGNISED = 0x03
DIAG_CALLED_AE_NOT_RECOGNISED = 0x07
