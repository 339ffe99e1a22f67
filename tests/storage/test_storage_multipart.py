"""Objects built from numbered parts, ranged reads and copies: one contract that the local backend, S3
on moto's server and S3 on Ceph RGW (both over real HTTP) all keep, as a tus upload and the chunk API
rely on it."""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import subprocess
import sys
import threading

import pytest

from edcrm.recordings import audio
from edcrm.storage import (
    InvalidKey,
    InvalidPart,
    LocalStorage,
    NoSuchMultipart,
    ObjectNotFound,
    RangedReader,
    S3Storage,
    StorageUnavailable,
)
from tests.support import audio_samples
from tests.support.s3_server import free_port

MIB = 1024 * 1024
P = 5 * MIB  # the smallest part size S3 takes


@pytest.fixture(params=["local", "moto", "rgw"])
def storage(request, tmp_path):
    """Each backend in turn; an S3 one has its server as `server` (for a test's own checks)."""
    if request.param == "local":
        return LocalStorage(tmp_path / "storage")
    # moto's fixture first: its dummy keys and session token in the environment would make RGW refuse
    # every request, where RGW's keys (and no token) are fine for moto, which checks none.
    server = request.getfixturevalue("s3_server")
    if request.param == "rgw":
        server = request.getfixturevalue("rgw_s3")
    bucket = server.create_bucket()
    if request.param == "rgw":  # its memory store keeps what a test leaves
        request.addfinalizer(lambda: server.delete_bucket(bucket))
    storage = S3Storage(bucket, "edcrm", endpoint_url=server.endpoint_url, region="us-east-1")
    storage.server = server  # type: ignore[attr-defined]
    return storage


@pytest.fixture(scope="module")
def data() -> bytes:
    """Two whole parts and a last one of 1,000 bytes."""
    return os.urandom(2 * P + 1000)


@pytest.fixture
def source(tmp_path, data):
    """The bytes as a spool file on local disk, where parts are sent from."""
    path = tmp_path / "spool"
    path.write_bytes(data)
    return path


def read(storage, key: str) -> bytes:
    with storage.open(key) as stored:
        return stored.read()


def read_range(storage, key: str, start: int, stop: int | None = None) -> bytes:
    with storage.open_range(key, start, stop) as stream:
        return stream.read()


def put(storage, key, upload, number, source, data):
    """Send part number of data (from the spool file source)."""
    offset = (number - 1) * P
    length = min(P, len(data) - offset)
    return storage.put_part(key, upload, number, source, offset, length, part_size=P)


def test_parts_sent_in_any_order_make_the_object(storage, source, data):
    upload = storage.start_multipart("recordings/1/u1", part_size=P, content_type="audio/mp4")
    etags = {number: put(storage, "recordings/1/u1", upload, number, source, data) for number in (3, 1, 2)}
    assert not storage.exists("recordings/1/u1")  # nothing is visible before complete

    size = storage.complete_multipart("recordings/1/u1", upload, sorted(etags.items()))

    assert size == len(data) == storage.size("recordings/1/u1")
    assert hashlib.sha256(read(storage, "recordings/1/u1")).digest() == hashlib.sha256(data).digest()


def test_the_content_type_is_kept_on_s3(s3_server, source, data):
    storage = S3Storage(s3_server.create_bucket(), endpoint_url=s3_server.endpoint_url)
    upload = storage.start_multipart("typed", part_size=P, content_type="audio/ogg")
    etag = storage.put_part("typed", upload, 1, source, 0, 10, part_size=P)
    storage.complete_multipart("typed", upload, [(1, etag)])
    head = s3_server.client().head_object(Bucket=storage.bucket, Key="typed")
    assert head["ContentType"] == "audio/ogg"


def test_a_part_sent_again_replaces_the_first(storage, source, data, tmp_path):
    other = tmp_path / "other"
    other.write_bytes(os.urandom(P))
    upload = storage.start_multipart("k", part_size=P)
    first = storage.put_part("k", upload, 1, other, 0, P, part_size=P)
    again = put(storage, "k", upload, 1, source, data)
    last = storage.put_part("k", upload, 2, source, P, 500, part_size=P)
    assert first != again

    with pytest.raises(InvalidPart):  # the ETag of the part sent before is not the part any more
        storage.complete_multipart("k", upload, [(1, first), (2, last)])
    assert storage.complete_multipart("k", upload, [(1, again), (2, last)]) == P + 500
    assert read(storage, "k") == data[: P + 500]


def test_a_last_part_sent_again_shorter_cuts_the_object(storage, source, data):
    upload = storage.start_multipart("k", part_size=P)
    one = put(storage, "k", upload, 1, source, data)
    storage.put_part("k", upload, 2, source, P, P, part_size=P)
    two = storage.put_part("k", upload, 2, source, P, 7, part_size=P)
    assert storage.complete_multipart("k", upload, [(1, one), (2, two)]) == P + 7
    assert read(storage, "k") == data[: P + 7]


def test_parts_that_cannot_be_joined_are_refused_and_the_upload_stays(storage, source, data):
    upload = storage.start_multipart("k", part_size=P)
    one = put(storage, "k", upload, 1, source, data)
    short = storage.put_part("k", upload, 2, source, P, 100, part_size=P)
    three = storage.put_part("k", upload, 3, source, 2 * P, 100, part_size=P)
    for parts in (
        [],
        [(2, short), (3, three)],  # not from 1
        [(1, one), (3, three)],  # a gap
        [(1, one), (2, short), (3, three)],  # a short part in the middle
        [(1, one), (2, "nope"), (3, three)],
    ):
        with pytest.raises(InvalidPart):
            storage.complete_multipart("k", upload, parts)
    assert not storage.exists("k")
    two = put(storage, "k", upload, 2, source, data)
    assert storage.complete_multipart("k", upload, [(1, one), (2, two), (3, three)]) == 2 * P + 100
    assert read(storage, "k") == data[: 2 * P + 100]


def test_a_part_sent_must_be_joined(storage, source, data):
    # Ceph RGW refuses to leave out a part that was sent (S3 would not), and so does the local backend.
    if getattr(storage, "server", None) is not None and storage.server.name == "moto":
        pytest.skip("moto leaves the part out, as AWS does")
    upload = storage.start_multipart("k", part_size=P)
    parts = [(n, put(storage, "k", upload, n, source, data)) for n in (1, 2, 3)]
    with pytest.raises(InvalidPart, match=r"\[3\] were sent but are not joined"):
        storage.complete_multipart("k", upload, parts[:2])
    assert storage.complete_multipart("k", upload, parts) == len(data)


def test_parts_copied_from_stored_objects(storage, source, data):
    storage.save_file("whole", source)
    storage.save("tail", io.BytesIO(b"the tail"))
    upload = storage.start_multipart("built", part_size=P)
    parts = [
        (1, storage.copy_part("built", upload, 1, "whole", part_size=P, start=P, stop=2 * P)),
        (2, storage.copy_part("built", upload, 2, "whole", part_size=P, start=0, stop=P)),
        (3, storage.copy_part("built", upload, 3, "tail", part_size=P)),  # the whole object
    ]
    assert storage.complete_multipart("built", upload, parts) == 2 * P + 8
    assert read(storage, "built") == data[P : 2 * P] + data[:P] + b"the tail"


def test_a_copied_range_to_the_end_of_the_source(storage, source, data):
    storage.save_file("whole", source)
    upload = storage.start_multipart("built", part_size=P)
    etag = storage.copy_part("built", upload, 1, "whole", part_size=P, start=2 * P)  # stop: the end
    assert storage.complete_multipart("built", upload, [(1, etag)]) == 1000
    assert read(storage, "built") == data[2 * P :]


def test_copy_part_refuses_what_is_not_there(storage, source):
    storage.save("small", io.BytesIO(b"0123456789"))
    upload = storage.start_multipart("k", part_size=P)
    with pytest.raises(ObjectNotFound):
        storage.copy_part("k", upload, 1, "missing", part_size=P)
    for start, stop in [(0, 11), (5, 5), (10, None), (3, 2), (-1, 4)]:
        with pytest.raises(ValueError):
            storage.copy_part("k", upload, 1, "small", part_size=P, start=start, stop=stop)


def test_complete_is_idempotent(storage, source, data):
    upload = storage.start_multipart("k", part_size=P)
    parts = [(n, put(storage, "k", upload, n, source, data)) for n in (1, 2, 3)]
    assert storage.complete_multipart("k", upload, parts) == len(data)
    # A retry (the answer was lost, or another process finishes the same upload) finds the object.
    assert storage.complete_multipart("k", upload, parts) == len(data)
    assert read(storage, "k") == data


def test_an_upload_that_is_gone_is_no_such_multipart(storage, source, data):
    upload = storage.start_multipart("k", part_size=P)
    etag = put(storage, "k", upload, 1, source, data)
    storage.abort_multipart("k", upload)
    with pytest.raises(NoSuchMultipart):
        storage.complete_multipart("k", upload, [(1, etag)])
    with pytest.raises(NoSuchMultipart):
        put(storage, "k", upload, 1, source, data)
    storage.save("other", io.BytesIO(b"x"))
    with pytest.raises(NoSuchMultipart):
        storage.copy_part("k", upload, 1, "other", part_size=P)


def test_an_upload_is_of_one_key(tmp_path, source):
    # (moto takes a part for an upload of another key: S3 and RGW answer NoSuchUpload.)
    storage = LocalStorage(tmp_path / "storage")
    upload = storage.start_multipart("k", part_size=P)
    with pytest.raises(NoSuchMultipart):
        storage.put_part("elsewhere", upload, 1, source, 0, 5, part_size=P)
    with pytest.raises(NoSuchMultipart):
        storage.complete_multipart("elsewhere", upload, [(1, "x")])


def test_a_part_after_complete_changes_nothing(storage, source, data):
    upload = storage.start_multipart("k", part_size=P)
    parts = [(1, put(storage, "k", upload, 1, source, data))]
    storage.complete_multipart("k", upload, parts)
    with pytest.raises(NoSuchMultipart):
        storage.put_part("k", upload, 1, source, P, P, part_size=P)
    assert read(storage, "k") == data[:P]


def test_abort_leaves_nothing_and_may_be_repeated(storage, source, data):
    upload = storage.start_multipart("k", part_size=P)
    put(storage, "k", upload, 1, source, data)
    storage.abort_multipart("k", upload)
    storage.abort_multipart("k", upload)  # gone already: no error
    assert not storage.exists("k")
    if isinstance(storage, S3Storage):
        client = storage.server.client()
        assert client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", []) == []
    else:
        assert [p for p in storage.root.rglob("*") if p.is_file()] == []


def test_abort_after_complete_keeps_the_object(storage, source, data):
    upload = storage.start_multipart("k", part_size=P)
    storage.complete_multipart("k", upload, [(1, put(storage, "k", upload, 1, source, data))])
    storage.abort_multipart("k", upload)  # e.g. the pruner, late: nothing to abort
    assert read(storage, "k") == data[:P]
    assert storage.complete_multipart("k", upload, [(1, "any")]) == P  # completed, whatever it is told


def test_parts_are_checked(storage, source):
    upload = storage.start_multipart("k", part_size=P)
    for number, offset, length, part_size in [
        (0, 0, 10, P),
        (10_001, 0, 10, P),
        (1, 0, P + 1, P),
        (1, 2 * P + 1000, 1, P),  # past the end of the file
        (1, -1, 10, P),
        (1, 0, 10, MIB),  # parts below S3's minimum
    ]:
        with pytest.raises(ValueError):
            storage.put_part("k", upload, number, source, offset, length, part_size=part_size)
    with pytest.raises(ValueError):
        storage.start_multipart("k", part_size=MIB)


def test_open_range(storage):
    storage.save("k", io.BytesIO(b"0123456789"))
    assert read_range(storage, "k", 0) == b"0123456789"
    assert read_range(storage, "k", 3, 7) == b"3456"
    assert read_range(storage, "k", 9) == b"9"
    assert read_range(storage, "k", 8, 50) == b"89"  # cut at the end
    assert read_range(storage, "k", 10) == b""
    assert read_range(storage, "k", 20, 30) == b""
    assert read_range(storage, "k", 4, 4) == b""
    with storage.open_range("k", 2, 8) as stream:  # small reads, as a streamed response makes
        assert [stream.read(4), stream.read(4), stream.read(4)] == [b"2345", b"67", b""]
    with pytest.raises(ObjectNotFound):
        storage.open_range("missing", 0)
    with pytest.raises(ObjectNotFound):
        storage.open_range("missing", 3, 3)
    for start, stop in [(-1, None), (5, 4)]:
        with pytest.raises(ValueError):
            storage.open_range("k", start, stop)


def test_an_empty_object(storage, source):
    storage.save("empty", io.BytesIO(b""))
    assert read_range(storage, "empty", 0) == b""
    assert read_range(storage, "empty", 0, 10) == b""
    with RangedReader(storage, "empty", 0) as reader:
        assert reader.read() == b""
    # A recording of no bytes: one empty part.
    upload = storage.start_multipart("k", part_size=P)
    etag = storage.put_part("k", upload, 1, source, 0, 0, part_size=P)
    assert storage.complete_multipart("k", upload, [(1, etag)]) == 0
    assert read(storage, "k") == b""


def test_copy(storage):
    storage.save("a", io.BytesIO(b"first"))
    storage.save("b", io.BytesIO(b"old"))
    storage.copy("a", "b")
    storage.copy("a", "c/d")
    assert (read(storage, "b"), read(storage, "c/d"), read(storage, "a")) == (b"first", b"first", b"first")
    with pytest.raises(ObjectNotFound):
        storage.copy("missing", "e")
    assert not storage.exists("e")


# -- RangedReader: a seekable file over ranged reads -----------------------------------------------


@pytest.mark.parametrize(
    "sample",
    [
        audio_samples.mp3(2000),
        audio_samples.wav(3.0),
        audio_samples.mp4(2.0),
        audio_samples.adts(500),
        audio_samples.opus(2.0),
    ],
    ids=["mp3", "wav", "m4a", "aac", "opus"],
)
def test_mutagen_reads_a_recording_through_a_ranged_reader(storage, sample):
    storage.save("rec", io.BytesIO(sample))
    audio_type = audio.detect(sample[: audio.SNIFF_BYTES])
    expected = audio.examine(audio_type, io.BytesIO(sample))

    reader = RangedReader(storage, "rec", len(sample), block_size=16 * 1024)
    with reader:
        assert audio.examine(audio_type, reader) == expected
    # mutagen reads a few bytes at a time, here and there: whole blocks, each fetched once or so.
    assert reader.requests <= len(sample) // (16 * 1024) + 3


def test_a_ranged_reader_reads_like_a_file(storage):
    data = os.urandom(100_000)
    storage.save("k", io.BytesIO(data))
    reader, file = RangedReader(storage, "k", len(data), block_size=4096), io.BytesIO(data)
    moves = [(0, 0, 10), (50_000, 0, 9000), (-128, 2, 200), (-10, 1, 3), (99_990, 0, -1), (200_000, 0, 5)]
    for offset, whence, size in moves:
        assert reader.seek(offset, whence) == file.seek(offset, whence)
        assert reader.read(size) == file.read(size)
        assert reader.tell() == file.tell()
    assert reader.seekable() and reader.readable() and not reader.writable()
    reader.seek(0)
    assert reader.read() == data
    with pytest.raises(OSError):
        reader.seek(-1)
    reader.close()
    with pytest.raises(ValueError):
        reader.read(1)


def test_a_ranged_reader_over_an_object_shorter_than_told(storage):
    storage.save("k", io.BytesIO(b"0123456789"))
    with RangedReader(storage, "k", 20, block_size=4) as reader:
        assert reader.read() == b"0123456789"  # ends where the bytes do, without looping
        reader.seek(8)
        assert reader.read(5) == b"89"


def test_a_ranged_reader_keeps_a_few_blocks(storage):
    data = os.urandom(64 * 1024)
    storage.save("k", io.BytesIO(data))
    reader = RangedReader(storage, "k", len(data), block_size=4096)
    for _ in range(3):  # back and forth between the start and the end, as a tag reader does
        reader.seek(10)
        reader.read(100)
        reader.seek(-128, os.SEEK_END)
        reader.read(128)
    assert reader.requests == 2


# -- memory, outages, keys --------------------------------------------------------------------------


#: Sends parts 1 and 2 of a file and prints the peak of Python's allocations while sending part 2: run
#: in a process of its own, so that moto's server (which holds what it receives) is not counted.
STREAM_SCRIPT = """
import sys, tracemalloc
from edcrm.storage import LocalStorage, S3Storage
kind, where, path, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if kind == "local":
    storage = LocalStorage(where)
else:
    storage = S3Storage(where.split()[0], endpoint_url=where.split()[1])
upload = storage.start_multipart("k", part_size=size)
storage.put_part("k", upload, 1, path, 0, size, part_size=size)  # the client, its connection: warm
tracemalloc.start()
storage.put_part("k", upload, 2, path, size, size, part_size=size)
print(tracemalloc.get_traced_memory()[1])
"""


def test_a_part_streams_from_disk(storage, source):
    if isinstance(storage, S3Storage):
        where = f"{storage.bucket} {storage.endpoint_url}"
    else:
        where = str(storage.root)
    kind = "s3" if isinstance(storage, S3Storage) else "local"
    done = subprocess.run(
        [sys.executable, "-c", STREAM_SCRIPT, kind, where, str(source), str(P)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(done.stdout) < 2.5 * MIB  # a 5 MiB part is never whole in memory


def test_s3_outages_are_storage_unavailable(s3_server, source, data):
    storage = S3Storage(s3_server.create_bucket(), endpoint_url=s3_server.endpoint_url)
    storage.save("kept", io.BytesIO(b"data"))
    upload = storage.start_multipart("k", part_size=P)
    etag = put(storage, "k", upload, 1, source, data)
    operations = {
        "start_multipart": lambda: storage.start_multipart("k", part_size=P),
        "put_part": lambda: put(storage, "k", upload, 2, source, data),
        "copy_part": lambda: storage.copy_part("k", upload, 2, "kept", part_size=P),
        "complete_multipart": lambda: storage.complete_multipart("k", upload, [(1, etag)]),
        "abort_multipart": lambda: storage.abort_multipart("k", upload),
        "open_range": lambda: storage.open_range("kept", 1, 3),
        "copy": lambda: storage.copy("kept", "copied"),
        "RangedReader": lambda: RangedReader(storage, "kept", 4).read(),
    }
    raised = {}
    with s3_server.stopped():
        for name, operation in operations.items():
            try:
                operation()
            except Exception as error:
                raised[name] = type(error).__name__
    assert raised == dict.fromkeys(operations, "StorageUnavailable")
    # Nothing was lost: the upload goes on once S3 is back.
    assert storage.complete_multipart("k", upload, [(1, etag)]) == P


def test_a_full_disk_is_storage_unavailable(tmp_path, source, data, monkeypatch):
    import errno

    storage = LocalStorage(tmp_path / "storage")
    storage.save("kept", io.BytesIO(b"data"))
    upload = storage.start_multipart("k", part_size=P)

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(StorageUnavailable):
        put(storage, "k", upload, 1, source, data)
    with pytest.raises(StorageUnavailable):
        storage.copy_part("k", upload, 1, "kept", part_size=P)
    monkeypatch.undo()
    etag = put(storage, "k", upload, 1, source, data)  # nothing half-recorded: the part goes in later
    assert storage.complete_multipart("k", upload, [(1, etag)]) == P


BAD_KEYS = ["../x", "/abs", "a//b", "a\\b", "a\x00b", "", ".multipart/x", ".multipart"]


def test_bad_keys_are_refused(storage, source):
    storage.save("ok", io.BytesIO(b"x"))
    upload = storage.start_multipart("ok2", part_size=P)
    attempts = {
        "start_multipart": lambda key: storage.start_multipart(key, part_size=P),
        "put_part": lambda key: storage.put_part(key, upload, 1, source, 0, 5, part_size=P),
        "copy_part": lambda key: storage.copy_part(key, upload, 1, "ok", part_size=P),
        "copy_part source": lambda key: storage.copy_part("ok2", upload, 1, key, part_size=P),
        "complete_multipart": lambda key: storage.complete_multipart(key, upload, [(1, "x")]),
        "abort_multipart": lambda key: storage.abort_multipart(key, upload),
        "open_range": lambda key: storage.open_range(key, 0),
        "copy": lambda key: storage.copy(key, "ok"),
        "copy target": lambda key: storage.copy("ok", key),
        "RangedReader": lambda key: RangedReader(storage, key, 10),
    }
    if isinstance(storage, S3Storage):
        # No request may be made: one would go to a port nobody listens on (StorageUnavailable).
        storage.endpoint_url, storage._client = f"http://127.0.0.1:{free_port()}", None
    for name, attempt in attempts.items():
        for key in BAD_KEYS:
            with pytest.raises(InvalidKey):
                attempt(key)
                pytest.fail(f"{name} took {key!r}")


# -- the local backend: one sparse file, shared by the host's processes ------------------------------


def test_local_parts_from_another_process(tmp_path, source, data):
    storage = LocalStorage(tmp_path / "storage")
    upload = storage.start_multipart("recordings/2/u", part_size=P)
    script = (
        "import sys; from edcrm.storage import LocalStorage; "
        "s = LocalStorage(sys.argv[1]); "
        "print(s.put_part('recordings/2/u', sys.argv[2], 2, sys.argv[3], int(sys.argv[4]), int(sys.argv[4]), "
        "part_size=int(sys.argv[4])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(storage.root), upload, str(source), str(P)],
        capture_output=True,
        text=True,
        check=True,
    )
    parts = [(1, put(storage, "recordings/2/u", upload, 1, source, data)), (2, done.stdout.strip())]
    # A third process (a new LocalStorage on the same folder) completes it.
    assert LocalStorage(storage.root).complete_multipart("recordings/2/u", upload, parts) == 2 * P
    assert read(storage, "recordings/2/u") == data[: 2 * P]


def test_local_upload_is_one_sparse_file_renamed_into_place(tmp_path, source, data):
    storage = LocalStorage(tmp_path / "storage")
    upload = storage.start_multipart("recordings/3/u", part_size=P)
    last = put(storage, "recordings/3/u", upload, 3, source, data)
    in_progress = storage.root / ".multipart" / upload / "data"
    assert in_progress.stat().st_size == len(data)
    assert in_progress.stat().st_blocks * 512 < 2 * MIB  # parts 1 and 2 not written: holes
    parts = [(1, put(storage, "recordings/3/u", upload, 1, source, data))]
    parts += [(2, put(storage, "recordings/3/u", upload, 2, source, data)), (3, last)]
    inode = in_progress.stat().st_ino

    storage.complete_multipart("recordings/3/u", upload, parts)

    assert (storage.root / "recordings" / "3" / "u").stat().st_ino == inode  # renamed, not copied
    assert not (storage.root / ".multipart" / upload).exists()
    # An id names an upload of this folder, never a path.
    storage.abort_multipart("recordings/3/u", "../../etc")
    with pytest.raises(NoSuchMultipart):
        storage.put_part("recordings/3/u", "../../etc", 1, source, 0, 1, part_size=P)


def test_local_complete_waits_for_a_part_in_flight(tmp_path, source, data):
    storage = LocalStorage(tmp_path / "storage")
    upload = storage.start_multipart("k", part_size=P)
    parts = [(1, put(storage, "k", upload, 1, source, data))]
    # A part being written (by another process of the host) holds a shared lock on the upload's file.
    writer = os.open(storage.root / ".multipart" / upload / "data", os.O_RDWR)
    fcntl.flock(writer, fcntl.LOCK_SH)
    completing = threading.Thread(target=storage.complete_multipart, args=("k", upload, parts))
    completing.start()
    completing.join(0.3)
    assert completing.is_alive() and not storage.exists("k")  # it waits for the part
    os.close(writer)  # the part is written
    completing.join(5)
    assert read(storage, "k") == data[:P]
