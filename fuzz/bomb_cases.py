"""The issue 23 categories: decompression bombs (one C-STORE that decodes or inflates to gigabytes)
and header values the listener must neither normalise nor accept for the worker to fail on.

Bombs are deterministic and costly to build (the deflate one compresses 1 GiB of zeros), so they
have their own count per category (`--bombs-per-category`); the value categories draw from seeded
lists like the other categories. Every bomb must be refused (0xC004) before anything decodes it;
`fuzz.run` measures the listener's peak RSS per category.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from fuzz import bombs
from fuzz.cases import StoreCase, _case

# (name, value on the wire, must the listener refuse it?) DICOM pads CS with a trailing space.
PHOTOMETRIC_VALUES = (
    ("nbsp", b"MONOCHROME2\xa0", True),
    ("tab", b"MONOCHROME2\t", True),
    ("leading_space", b" MONOCHROME2", True),
    ("newline", b"MONOCHROME1\n", True),
    ("lower_case", b"monochrome2 ", True),
    ("space_pad", b"MONOCHROME2 ", False),
)
# A UI value may carry one trailing NUL pad (PS3.5 6.2); anything else is not the UID.
UID_VALUES = (
    ("leading_space", lambda uid: b" " + uid, True),
    ("trailing_newline", lambda uid: uid + b"\n", True),
    ("trailing_space", lambda uid: uid + b" ", True),
    ("two_nuls", lambda uid: uid + b"\x00\x00", True),
    ("nul_pad", lambda uid: uid + b"\x00", False),
)
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def rle(_rng: random.Random) -> StoreCase:
    ds, data = bombs.rle_bomb()
    return _case("rle_bomb", f"{ds.Rows}x{ds.Columns}", ds, data, syntax=RLELossless)


def deflate(_rng: random.Random) -> StoreCase:
    ds, data = bombs.deflate_bomb(1024)  # over the default budget (512 MiB) however it is counted
    return _case(
        "deflate_bomb", f"{len(data)} bytes -> 1 GiB", ds, data, syntax=DeflatedExplicitVRLittleEndian
    )


def j2k(rng: random.Random) -> StoreCase:
    dicom_too = rng.random() < 0.5
    ds, data = bombs.j2k_bomb(dicom_dims_too=dicom_too)
    name = "siz_and_header_65535" if dicom_too else "siz_65535_header_512"
    return _case("j2k_bomb", name, ds, data, syntax=JPEG2000Lossless)


def native(rng: random.Random) -> StoreCase:
    ds, data = bombs.native_bomb(rng.choice((1, 1000, 2**31 - 1)))
    return _case(
        "native_absurd_dimensions", f"frames {ds.NumberOfFrames}", ds, data, syntax=ExplicitVRLittleEndian
    )


def photometric(rng: random.Random) -> StoreCase:
    name, value, refuse = rng.choice(PHOTOMETRIC_VALUES)
    ds, data = bombs.photometric_with(value)
    return _case("photometric_odd_whitespace", name, ds, data, must_refuse=refuse, must_accept=not refuse)


def uid_whitespace(rng: random.Random) -> StoreCase:
    name, change, refuse = rng.choice(UID_VALUES)
    keyword = rng.choice(UID_KEYWORDS)
    ds = bombs.datasets.ct_slice()
    value = change(str(ds.data_element(keyword).value).encode())  # type: ignore[union-attr]
    _ds, data = bombs.uid_with_value(ds, keyword, value)
    # A changed SOP Instance UID goes into the command too, as a careless sender would send it.
    changed_instance = keyword == "SOPInstanceUID" and refuse
    return _case(
        "uid_odd_whitespace",
        f"{keyword} {name}",
        ds,
        data,
        sop_instance=value.decode("latin-1") if changed_instance else str(ds.SOPInstanceUID),
        must_refuse=refuse,
        must_accept=not refuse,
    )


BOMB_GENERATORS: dict[str, Callable[[random.Random], StoreCase]] = {
    "rle_bomb": rle,
    "deflate_bomb": deflate,
    "j2k_bomb": j2k,
    "native_absurd_dimensions": native,
}
VALUE_GENERATORS: dict[str, Callable[[random.Random], StoreCase]] = {
    "photometric_odd_whitespace": photometric,
    "uid_odd_whitespace": uid_whitespace,
}


def bomb_cases(bombs_per_category: int, per_category: int, seed: int = 17) -> Iterator[StoreCase]:
    """`bombs_per_category` of each bomb, `per_category` of each value category, seeded."""
    for generators, count in ((BOMB_GENERATORS, bombs_per_category), (VALUE_GENERATORS, per_category)):
        for category, generate in generators.items():
            rng = random.Random(f"{seed}-{category}")
            for _ in range(count):
                yield generate(rng)
