"""The fuzz cases: malformed C-STOREs by category, each with what a careful archive must answer.

A `StoreCase` is one C-STORE: the context it goes on, the command's UIDs and the dataset bytes;
`must_refuse` says whether success would be wrong whatever the worker later makes of it. Cases
where success may be right (a mutation that only touched a description) are judged afterwards by
the worker's own decoding of what was archived (`fuzz.run`). Every case is built from a seeded
random generator: the same seed gives the same cases before and after a change.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)

from fuzz import datasets

# Storage SOP classes a CT context must not let in (MR, SC, PDF, RT Plan, SR, XA, PET, CR, US, MG).
OTHER_STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.104.1",
    "1.2.840.10008.5.1.4.1.1.481.5",
    "1.2.840.10008.5.1.4.1.1.88.11",
    "1.2.840.10008.5.1.4.1.1.12.1",
    "1.2.840.10008.5.1.4.1.1.128",
    "1.2.840.10008.5.1.4.1.1.1",
    "1.2.840.10008.5.1.4.1.1.6.1",
    "1.2.840.10008.5.1.4.1.1.1.2",
)
BAD_UIDS = (
    "1.02.3",
    "1.2.a.4",
    "1..2",
    ".1.2",
    "1.2.",
    "1.2/../../../../tmp/fuzz-escape",
    "../../../tmp/fuzz-escape",
    "1." + "1" * 70,
    "1.2.3\x00\x00x",
    "1.2.3 4",
    "1,2,3",
    "-1.2.3",
    "1.2.3.%s" % ("9" * 60),
    "1.2.\xe93",
)
PATIENT_MARKER = "FUZZ^MARKER"


@dataclass(frozen=True)
class StoreCase:
    category: str
    name: str
    sop_class: str  # of the command
    sop_instance: str  # of the command
    context_syntax: str  # the transfer syntax of the context it is sent on (CT abstract syntax)
    dataset: bytes
    must_refuse: bool
    # Success is the only right answer (valid controls, a UID with its one allowed NUL pad).
    must_accept: bool = False


def _explicit(ds: Dataset) -> bytes:
    return datasets.encode(ds, implicit=False)


def _case(category: str, name: str, ds: Dataset, data: bytes | None = None, **kw: object) -> StoreCase:
    return StoreCase(
        category=category,
        name=name,
        sop_class=str(kw.get("sop_class", ds.get("SOPClassUID", CTImageStorage))),
        sop_instance=str(kw.get("sop_instance", ds.get("SOPInstanceUID", generate_uid()))),
        context_syntax=str(kw.get("syntax", ExplicitVRLittleEndian)),
        dataset=data if data is not None else _explicit(ds),
        must_refuse=bool(kw.get("must_refuse", True)),
        must_accept=bool(kw.get("must_accept", False)),
    )


def other_sop_class(rng: random.Random) -> StoreCase:
    ds = datasets.ct_slice()
    ds.SOPClassUID = rng.choice(OTHER_STORAGE_CLASSES)
    return _case("other_sop_class_on_ct_context", ds.SOPClassUID, ds)


def command_mismatch(rng: random.Random) -> StoreCase:
    ds = datasets.ct_slice()
    if rng.random() < 0.5:
        return _case("command_dataset_mismatch", "instance", ds, sop_instance=generate_uid())
    return _case("command_dataset_mismatch", "class", ds, sop_class="1.2.840.10008.5.1.4.1.1.2.1")


def missing_uid(rng: random.Random) -> StoreCase:
    ds = datasets.ct_slice()
    keyword = rng.choice(("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"))
    command_instance = ds.SOPInstanceUID
    delattr(ds, keyword)
    return _case("missing_uid", keyword, ds, sop_instance=command_instance, sop_class=CTImageStorage)


def invalid_uid(rng: random.Random) -> StoreCase:
    ds = datasets.ct_slice()
    keyword = rng.choice(("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
    bad = rng.choice(BAD_UIDS)
    command_instance = ds.SOPInstanceUID if keyword != "SOPInstanceUID" else bad
    ds = datasets.with_element(ds, keyword, "UI", bad)
    return _case("invalid_uid", f"{keyword}={bad[:12]!r}", ds, sop_instance=command_instance)


def uid_wrong_vr(rng: random.Random) -> StoreCase:
    ds = datasets.ct_slice()
    keyword = rng.choice(("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
    vr = rng.choice(("LO", "SH", "UT", "LT", "CS"))
    ds = datasets.with_element(ds, keyword, vr, str(ds.data_element(keyword).value))  # type: ignore[union-attr]
    return _case("uid_with_non_ui_vr", f"{keyword} as {vr}", ds)


def pixel_length(rng: random.Random) -> StoreCase:
    ds = datasets.ct_slice()
    choice = rng.randrange(6)
    if choice == 0:
        ds = datasets.truncated_pixels(ds, rng.randrange(0, len(ds.PixelData) - 2, 2))
        name = "short"
    elif choice == 1:
        ds.PixelData = bytes(ds.PixelData) + bytes(rng.randrange(2, 4096, 2))
        name = "long"
    elif choice == 2:
        ds.Rows = int(ds.Rows) * rng.choice((2, 4, 16))
        name = "rows"
    elif choice == 3:
        ds.NumberOfFrames = rng.choice((2, 7, 1000, 2**31 - 1))
        name = "frames"
    elif choice == 4:
        ds.BitsAllocated = rng.choice((32, 64))
        name = "bits"
    else:
        ds.Columns = 0
        name = "zero_columns"
    return _case("native_pixel_length", name, ds)


def encoding_mismatch(rng: random.Random) -> StoreCase:
    ds = datasets.ct_slice()
    if rng.random() < 0.5:
        return _case("encoding_mismatch", "explicit_as_implicit", ds, syntax=ImplicitVRLittleEndian)
    data = datasets.encode(ds, implicit=True)
    return _case("encoding_mismatch", "implicit_as_explicit", ds, data, syntax=ExplicitVRLittleEndian)


def compressed_garbage(rng: random.Random) -> StoreCase:
    choice = rng.randrange(3)
    if choice == 0:
        ds = datasets.j2k_with_random_payload(datasets.j2k_slice(), seed=rng.randrange(1 << 30))
        return _case("compressed_garbage", "j2k_random_payload", ds, syntax=JPEG2000Lossless)
    if choice == 1:
        from pydicom.encaps import encapsulate

        ds = datasets.j2k_slice()
        ds.PixelData = encapsulate([rng.randbytes(rng.randrange(16, 4000))])
        return _case("compressed_garbage", "random_fragment", ds, syntax=JPEG2000Lossless)
    ds = datasets.ct_slice()  # native pixel data sent on a JPEG 2000 context
    return _case("compressed_garbage", "native_on_j2k_context", ds, syntax=JPEG2000Lossless)


def truncated(rng: random.Random) -> StoreCase:
    ds = datasets.ct_slice()
    data = _explicit(ds)
    cut = rng.randrange(8, len(data) - 2)
    return _case("truncated_dataset", f"at {cut}", ds, data[:cut])


def random_bytes(rng: random.Random) -> StoreCase:
    ds = datasets.ct_slice()
    data = rng.randbytes(rng.randrange(1, 20000))
    return _case("random_bytes", f"{len(data)} bytes", ds, data)


def command_unknown_class(rng: random.Random) -> StoreCase:
    """The command names a SOP class no service knows (pynetdicom aborts: was its temporary file left?)."""
    ds = datasets.ct_slice()
    sop_class = rng.choice(("1.2.3.4.5.6", "1.2.840.99999.1", "2.25.1"))
    return _case("command_unknown_sop_class", sop_class, ds, sop_class=sop_class)


def command_instance_empty(rng: random.Random) -> StoreCase:
    """The command's SOP Instance UID is empty or NUL (pynetdicom cannot even write the file meta)."""
    ds = datasets.ct_slice()
    instance = rng.choice(("", "\x00", "\x00\x00"))
    return _case("command_instance_uid_empty", repr(instance), ds, sop_instance=instance)


def huge_length(rng: random.Random) -> StoreCase:
    """One element claims far more bytes than the dataset holds."""
    ds = datasets.ct_slice()
    data = bytearray(_explicit(ds))
    tag = rng.choice(
        (b"\x08\x00\x30\x10", b"\x10\x00\x10\x00", b"\x08\x00\x60\x00")
    )  # StudyDescription, PatientName, Modality
    at = data.find(tag)
    if at < 0:
        at = 0
    # Explicit VR short form: tag(4) VR(2) length(2): claim 0xFFFE bytes.
    data[at + 6 : at + 8] = b"\xfe\xff"
    return _case("element_length_overrun", tag.hex(), ds, bytes(data))


def deep_sequence(rng: random.Random) -> StoreCase:
    ds = datasets.ct_slice()
    depth = rng.choice((20, 100, 200))
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(depth):
        outer = Dataset()
        outer.ReferencedImageSequence = Sequence([inner])
        inner = outer
    ds.ReferencedImageSequence = Sequence([inner])
    # Depth alone does not make an instance wrong: the oracle decides.
    return _case("deep_sequence", f"depth {depth}", ds, must_refuse=False)


def mutation(rng: random.Random) -> StoreCase:
    """Random bytes overwritten in the header (before the pixel data): judged by the oracle."""
    ds = datasets.ct_slice()
    data = bytearray(_explicit(ds))
    header_end = data.find(b"\xe0\x7f\x10\x00")
    for _ in range(rng.randrange(1, 8)):
        at = rng.randrange(0, max(header_end, 1))
        data[at] = rng.randrange(256)
    return _case("header_mutation", f"{len(data)}", ds, bytes(data), must_refuse=False)


def patient_marker(rng: random.Random) -> StoreCase:
    """Patient data in places that make libraries complain (and quote it): must never reach a log."""
    ds = datasets.ct_slice()
    marker = f"{PATIENT_MARKER}^{rng.randrange(10**6)}"
    choice = rng.randrange(3)
    if choice == 0:
        ds.PatientName = marker + "\\" * 3 + "=" * 5  # too many components: pydicom warns
        return _case("patient_data_markers", "pn_invalid", ds, must_refuse=False)
    if choice == 1:
        ds = datasets.with_element(ds, "StudyInstanceUID", "UI", marker)  # invalid UID quoting the name
        return _case("patient_data_markers", "uid_is_name", ds)
    ds.PatientID = marker * 10  # longer than LO allows
    return _case("patient_data_markers", "id_too_long", ds, must_refuse=False)


def valid(rng: random.Random) -> StoreCase:
    """Controls: valid instances that must be stored (a listener refusing all would look perfect)."""
    ds = datasets.ct_slice()
    if rng.random() < 0.5:
        return _case("valid_control", "explicit", ds, must_refuse=False, must_accept=True)
    return _case(
        "valid_control",
        "implicit",
        ds,
        datasets.encode(ds, implicit=True),
        syntax=ImplicitVRLittleEndian,
        must_refuse=False,
        must_accept=True,
    )


GENERATORS: dict[str, Callable[[random.Random], StoreCase]] = {
    "other_sop_class_on_ct_context": other_sop_class,
    "command_dataset_mismatch": command_mismatch,
    "missing_uid": missing_uid,
    "invalid_uid": invalid_uid,
    "uid_with_non_ui_vr": uid_wrong_vr,
    "native_pixel_length": pixel_length,
    "encoding_mismatch": encoding_mismatch,
    "compressed_garbage": compressed_garbage,
    "truncated_dataset": truncated,
    "random_bytes": random_bytes,
    "command_unknown_sop_class": command_unknown_class,
    "command_instance_uid_empty": command_instance_empty,
    "element_length_overrun": huge_length,
    "deep_sequence": deep_sequence,
    "header_mutation": mutation,
    "patient_data_markers": patient_marker,
    "valid_control": valid,
}


def store_cases(per_category: int, seed: int = 17) -> Iterator[StoreCase]:
    """`per_category` cases of each category, the same for the same seed."""
    for category, generate in GENERATORS.items():
        rng = random.Random(f"{seed}-{category}")
        for _ in range(per_category):
            yield generate(rng)
