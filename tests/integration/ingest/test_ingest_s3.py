"""The listener with its archive on a real S3 server (SeaweedFS): every transfer syntax round-trips
with identical pixels, the re-send policy holds, and a large instance goes up in parts within a
stated memory bound."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from e2e_kit import KIDNEYCT, Process, kidneyct_env
from ingest_support import LOCALHOST, MemoryPublisher, listener_settings, running_listener, send_files
from pydicom import dcmread
from pydicom.data import get_testdata_file
from seaweed_process import SeaweedProcess

import migrations
from ingest import statuses
from kidneyct.send_files import send_files as scu_send_files
from storage.archive.reader import ArchiveReader
from storage.archive.s3 import S3Archive, S3Location, split_s3_uri
from storage.archive.s3_client import S3ClientOptions, make_s3_client
from storage.stream.events import InstanceEvent

EXTRA_CLASSES = "1.2.840.10008.5.1.4.1.1.4,1.2.840.10008.5.1.4.1.1.7"
# One file per transfer syntax, as tests/integration/ingest/test_ingest_kafka.py.
FILES = [
    "CT_small.dcm",  # explicit VR little endian
    "693_J2KR.dcm",  # JPEG 2000 lossless
    "693_J2KI.dcm",  # JPEG 2000
    "eCT_Supplemental.dcm",  # Enhanced CT, 2 frames
    "MR_small_implicit.dcm",  # implicit VR little endian
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "MR_small_RLE.dcm",  # RLE lossless
    "image_dfl.dcm",  # deflated explicit VR little endian
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
    "JPEG-LL.dcm",  # JPEG lossless SV1
]
PART_BYTES = 8 << 20
LARGE_MB = 200
# One 8 MiB part in memory at a time plus botocore's buffers (measured: 15 MB for 200 MB).
MEMORY_BOUND_MB = 48


def _s3_settings(tmp_path: Path, url: str, server: SeaweedProcess, **overrides: object):  # noqa: ANN202
    return listener_settings(
        tmp_path / "local-archive",
        archive_url=url,
        s3_endpoint_url=server.endpoint_url,
        extra_storage_sop_classes=EXTRA_CLASSES,
        **overrides,
    )


def _reader(server: SeaweedProcess, tmp_path: Path) -> ArchiveReader:
    return ArchiveReader(
        tmp_path / "no-archive-here",
        s3_client_factory=lambda: make_s3_client(S3ClientOptions(endpoint_url=server.endpoint_url)),
    )


@pytest.mark.parametrize("name", FILES)
def test_every_transfer_syntax_round_trips_through_the_object_store_with_identical_pixels(
    tmp_path: Path, s3_server: SeaweedProcess, s3_archive_url: str, name: str
) -> None:
    path = Path(get_testdata_file(name))
    publisher = MemoryPublisher()
    with running_listener(_s3_settings(tmp_path, s3_archive_url, s3_server), publisher) as (listener, _):
        assert send_files(listener.port, [path]) == [statuses.SUCCESS]
    (record,) = publisher.records
    event = InstanceEvent.from_json(record[2])
    assert event.archive_uri.startswith(f"{s3_archive_url}/")
    assert not (tmp_path / "local-archive").exists()  # nothing on the listener's disk
    with _reader(s3_server, tmp_path).open(event.archive_uri) as f:
        stored = f.read()
    assert hashlib.sha256(stored).hexdigest() == event.sha256
    sent, got = dcmread(path), dcmread(io.BytesIO(stored))
    assert got.SOPInstanceUID == sent.SOPInstanceUID
    assert got.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
    np.testing.assert_array_equal(got.pixel_array, sent.pixel_array)


def test_resend_keeps_every_version_and_never_overwrites(
    tmp_path: Path, s3_server: SeaweedProcess, s3_archive_url: str
) -> None:
    archive = S3Archive(s3_server.client(), S3Location.parse(s3_archive_url), part_bytes=5 << 20)
    uids = {"study_uid": "1.2.3", "series_uid": "1.2.3.4", "sop_uid": "1.2.3.4.5"}
    first_file, second_file = tmp_path / "a", tmp_path / "b"
    first_file.write_bytes(b"first content")
    second_file.write_bytes(b"other content")
    first = archive.place_file(first_file, **uids)
    again = archive.place_file(first_file, **uids)
    other = archive.place_file(second_file, **uids)
    assert again == first and first.replaced_sha256 is None
    assert other.uri != first.uri and other.uri.endswith(f".{other.sha256[:16]}.dcm")
    assert other.replaced_sha256 == first.sha256
    client = s3_server.client()
    for stored, content in ((first, b"first content"), (other, b"other content")):
        bucket, key = split_s3_uri(stored.uri)
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == content


def test_an_unreachable_object_store_answers_out_of_resources_and_publishes_nothing(tmp_path: Path) -> None:
    publisher = MemoryPublisher()
    settings = listener_settings(
        tmp_path / "local-archive",
        archive_url="s3://nowhere/archive",
        s3_endpoint_url="http://127.0.0.1:9",  # discard port: connection refused
        s3_max_attempts=2,
        s3_connect_timeout_s=1.0,
    )
    with running_listener(settings, publisher) as (listener, metrics):
        assert send_files(listener.port, [Path(get_testdata_file("CT_small.dcm"))]) == [
            statuses.OUT_OF_RESOURCES
        ]
    assert publisher.records == []


def _big_ct(path: Path, megabytes: int) -> Path:
    """A CT whose pixel data is `megabytes` MB (frames of 512x512 16-bit)."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    frames = megabytes * (1 << 20) // (512 * 512 * 2)
    pixels = np.random.default_rng(0).integers(0, 4096, size=(frames, 512, 512), dtype=np.uint16)
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _vm_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.slow
@pytest.mark.parametrize("archive", ["s3", "local"])
def test_a_large_instance_goes_up_in_parts_within_the_memory_bound(
    tmp_path: Path, s3_server: SeaweedProcess, s3_archive_url: str, archive: str
) -> None:
    """200 MB to a `kidneyct listen` process: its peak RSS (VmHWM) grows by less than
    MEMORY_BOUND_MB over its idle RSS, with the object store as with the local folder (beside it,
    for comparison: pynetdicom's receive buffers are the same for both)."""
    path = _big_ct(tmp_path / "big.dcm", LARGE_MB)
    data = tmp_path / "data"
    data.mkdir()
    migrations.upgrade(f"sqlite:///{data / 'kidneyct.db'}")
    settings: dict[str, object] = {"verify_compressed_pixel_data": "false", "ae_title": "KIDNEYCT"}
    settings |= {"dimse_timeout_s": 300, "network_timeout_s": 300}
    if archive == "s3":
        settings |= {"archive_url": s3_archive_url, "s3_endpoint_url": s3_server.endpoint_url}
        settings |= {"s3_part_bytes": PART_BYTES}
    listener = Process([*KIDNEYCT, "listen"], kidneyct_env(data, **settings), tmp_path / "listen.log")
    try:
        port = int(listener.wait_event("listener_started", timeout_s=120)["port"])
        idle_kb = _vm_kb(listener.proc.pid, "VmRSS")
        # A long DIMSE timeout: the answer comes only once the last part is up.
        (result,) = scu_send_files(LOCALHOST, port, [path], called_ae="KIDNEYCT", timeout_s=300)
        assert result.status == statuses.SUCCESS
        growth_mb = (_vm_kb(listener.proc.pid, "VmHWM") - idle_kb) / 1024
    finally:
        listener.terminate()
    print(f"large instance ({archive}): {LARGE_MB} MB, listener peak RSS growth {growth_mb:.0f} MB")
    assert growth_mb < MEMORY_BOUND_MB, f"the listener's memory grew by {growth_mb:.0f} MB"
    if archive == "s3":
        bucket, prefix = split_s3_uri(s3_archive_url)
        (obj,) = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
        assert obj["Size"] >= LARGE_MB << 20


def test_two_listeners_share_one_port_with_reuse_port(
    tmp_path: Path, s3_server: SeaweedProcess, s3_archive_url: str
) -> None:
    """Several listener processes on one host: SO_REUSEPORT lets both bind the port, both store to one bucket."""
    first_publisher, second_publisher = MemoryPublisher(), MemoryPublisher()
    settings = _s3_settings(tmp_path, s3_archive_url, s3_server, dicom_reuse_port=True)
    with running_listener(settings, first_publisher) as (first, _):
        shared = _s3_settings(
            tmp_path, s3_archive_url, s3_server, dicom_reuse_port=True, dicom_port=first.port
        )
        with running_listener(shared, second_publisher) as (second, _):
            assert second.port == first.port
            for _ in range(8):
                assert send_files(first.port, [Path(get_testdata_file("CT_small.dcm"))]) == [statuses.SUCCESS]
    assert len(first_publisher.records) + len(second_publisher.records) == 8
