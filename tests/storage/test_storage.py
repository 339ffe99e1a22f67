"""The local storage backend (the embedded default): round trips, atomic saves, keys that cannot
escape the root, constant memory, and how STORAGE_URL picks a backend."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc

import pytest

from edcrm.config import ConfigError
from edcrm.storage import (
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    S3Storage,
    get_storage,
    storage_from_url,
    validate_key,
)
from edcrm.storage.base import StorageUnavailable

MIB = 1024 * 1024

BAD_KEYS = [
    "",
    "/etc/passwd",
    "..",
    "../outside",
    "a/../../outside",
    "a/..",
    "./a",
    "a/./b",
    "a//b",
    "a/",
    "a\\..\\..\\outside",
    "..\\outside",
    "a\x00b",
    "a\nb",
    "x" * 1025,
    ".multipart",  # where the local backend keeps its multipart uploads in progress
    ".multipart/0123456789abcdef0123456789abcdef/data",
]


@pytest.fixture
def root(tmp_path):
    return tmp_path / "root"


@pytest.fixture
def storage(root):
    return LocalStorage(root)


class Blocks:
    """A file object of `count` blocks of `block` (the same bytes object every time, so reading it
    allocates nothing), optionally raising after `fail_after` blocks and calling `during` after the
    first one."""

    def __init__(self, block: bytes, count: int, *, fail_after: int | None = None, during=None):
        self.block, self.left, self.fail_after, self.during, self.sent = block, count, fail_after, during, 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size < len(self.block):
            raise AssertionError(f"read({size}): the storage must read in blocks of {len(self.block)}")
        if self.fail_after is not None and self.sent == self.fail_after:
            raise ConnectionResetError("the client went away")
        if self.sent == 1 and self.during:
            self.during()
        if self.left == 0:
            return b""
        self.left -= 1
        self.sent += 1
        return self.block


def files_under(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_round_trip(storage, root):
    data = os.urandom(3 * MIB + 17)
    assert storage.save("recordings/2026/call 1.m4a", io.BytesIO(data)) == len(data)

    assert storage.exists("recordings/2026/call 1.m4a")
    assert storage.size("recordings/2026/call 1.m4a") == len(data)
    with storage.open("recordings/2026/call 1.m4a") as f:
        assert f.read() == data
    assert (root / "recordings" / "2026" / "call 1.m4a").read_bytes() == data
    assert storage.url_for_download("recordings/2026/call 1.m4a", 60) is None  # the app streams it

    storage.delete("recordings/2026/call 1.m4a")
    assert not storage.exists("recordings/2026/call 1.m4a")
    assert list(root.iterdir()) == []  # the folders it left empty are gone too
    storage.delete("recordings/2026/call 1.m4a")  # deleting what is gone is fine


def test_missing_objects(storage):
    storage.save("a/b", io.BytesIO(b"x"))
    for key in ("missing", "a", "a/b/c"):  # nothing, a folder, below a file
        assert not storage.exists(key)
        with pytest.raises(ObjectNotFound):
            storage.open(key)
        with pytest.raises(ObjectNotFound):
            storage.size(key)
    with pytest.raises(FileNotFoundError):  # ObjectNotFound is one, for callers that know no better
        storage.open("missing")


def test_save_replaces_and_keeps_neighbours(storage):
    storage.save("uploads/u1/0", io.BytesIO(b"first"))
    storage.save("uploads/u1/1", io.BytesIO(b"other"))
    assert storage.save("uploads/u1/0", io.BytesIO(b"second!")) == 7

    with storage.open("uploads/u1/0") as f:
        assert f.read() == b"second!"
    storage.delete("uploads/u1/0")
    with storage.open("uploads/u1/1") as f:  # its folder stays while not empty
        assert f.read() == b"other"


def test_an_empty_object(storage):
    assert storage.save("empty", io.BytesIO(b"")) == 0
    assert storage.exists("empty") and storage.size("empty") == 0


def test_a_failed_save_leaves_nothing(storage, root):
    with pytest.raises(ConnectionResetError):
        storage.save("uploads/u1/0", Blocks(b"x" * MIB, 10, fail_after=3))

    assert not storage.exists("uploads/u1/0")
    assert files_under(root) == []  # not even the temporary file


def test_a_failed_save_keeps_the_old_object(storage, root):
    storage.save("recording", io.BytesIO(b"old"))
    with pytest.raises(ConnectionResetError):
        storage.save("recording", Blocks(b"n" * MIB, 10, fail_after=2))

    with storage.open("recording") as f:
        assert f.read() == b"old"
    assert files_under(root) == ["recording"]


def test_no_partial_object_is_visible_while_saving(storage):
    storage.save("recording", io.BytesIO(b"old"))
    seen = {}

    def look():  # runs in the middle of the save, after 1 MiB has been written
        seen["exists"] = storage.exists("recording")
        seen["size"] = storage.size("recording")
        with storage.open("recording") as f:
            seen["bytes"] = f.read()

    storage.save("recording", Blocks(b"n" * MIB, 3, during=look))

    assert seen == {"exists": True, "size": 3, "bytes": b"old"}
    assert storage.size("recording") == 3 * MIB


def test_no_object_is_visible_before_its_save_ends(storage):
    seen = {}

    def look():
        seen["exists"] = storage.exists("new")

    storage.save("new", Blocks(b"n" * MIB, 2, during=look))
    assert seen == {"exists": False}
    assert storage.exists("new")


@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_that_could_escape_the_root_are_refused(storage, tmp_path, key):
    before = files_under(tmp_path)
    for attempt in (
        lambda: storage.save(key, io.BytesIO(b"evil")),
        lambda: storage.open(key),
        lambda: storage.delete(key),
        lambda: storage.exists(key),
        lambda: storage.size(key),
    ):
        with pytest.raises(InvalidKey):
            attempt()
    assert files_under(tmp_path) == before


def test_a_key_is_a_string():
    with pytest.raises(InvalidKey):
        validate_key(None)
    with pytest.raises(ValueError):  # InvalidKey is a ValueError
        validate_key(b"bytes/key")


def test_a_symlink_out_of_the_root_is_not_followed(storage, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root.mkdir()
    (root / "link").symlink_to(outside)

    with pytest.raises(InvalidKey):
        storage.save("link/file", io.BytesIO(b"evil"))
    with pytest.raises(InvalidKey):
        storage.open("link/file")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("key", ["a", ".hidden", "a b/c-d_e.m4a", "uploads/3f2a/chunks/000017", "ünï/cödé"])
def test_ordinary_keys_are_accepted(storage, key):
    storage.save(key, io.BytesIO(b"ok"))
    with storage.open(key) as f:
        assert f.read() == b"ok"


def test_saving_and_reading_64_mib_keeps_memory_flat(storage):
    block, count = os.urandom(MIB), 64
    expected = hashlib.sha256()
    for _ in range(count):
        expected.update(block)

    tracemalloc.start()
    try:
        assert storage.save("big/recording", Blocks(block, count)) == count * MIB
        _, save_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()

        digest = hashlib.sha256()
        with storage.open("big/recording") as f:
            while chunk := f.read(MIB):
                digest.update(chunk)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert digest.hexdigest() == expected.hexdigest()
    # A few blocks at most, against 64 MiB if anything held the file.
    assert save_peak < 4 * MIB, f"save peaked at {save_peak / MIB:.1f} MiB"
    assert read_peak < 4 * MIB, f"reading peaked at {read_peak / MIB:.1f} MiB"


def test_check_creates_the_root(storage, root):
    storage.check()
    assert root.is_dir()
    assert list(root.iterdir()) == []  # the write probe leaves nothing


def test_check_fails_when_the_root_is_a_file(root):
    root.write_text("not a folder")
    with pytest.raises(StorageUnavailable):  # the domain's error, from the OSError
        LocalStorage(root).check()


# -- choosing a backend ------------------------------------------------------------------------------------


def test_file_urls(tmp_path):
    storage = storage_from_url((tmp_path / "my files").as_uri())
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path / "my files"
    assert storage_from_url(f"file://localhost{tmp_path}").root == tmp_path


@pytest.mark.parametrize(
    "url",
    ["file://relative/path", "file:relative", "ftp://host/x", "storage", "", "s3:///prefix", "s3://b/../x"],
)
def test_unusable_storage_urls_are_config_errors(url):
    with pytest.raises(ConfigError, match="STORAGE_URL"):
        storage_from_url(url)


def test_s3_urls_connect_to_nothing_until_used():
    storage = storage_from_url(
        "s3://recordings/edcrm/prod/", endpoint_url="http://127.0.0.1:1", env={"AWS_REGION": "ap-south-1"}
    )
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.region) == ("recordings", "edcrm/prod", "ap-south-1")
    assert storage.object_key("a/b") == "edcrm/prod/a/b"
    assert storage._client is None
    with pytest.raises(InvalidKey):  # refused before any request
        storage.save("../a", io.BytesIO(b"x"))


def test_get_storage_is_the_apps_configured_backend(app, tmp_path):
    with app.app_context():
        storage = get_storage()
        assert isinstance(storage, LocalStorage)
        assert storage.root == tmp_path / "storage"
        assert get_storage() is storage  # built once per app


def test_delete_many_removes_the_keys_and_their_empty_folders(storage, root):
    keys = [f"uploads/u/chunks/{index:05d}" for index in range(3)]
    for key in [*keys, "uploads/v/kept"]:
        storage.save(key, io.BytesIO(b"x"))
    storage.delete_many([*keys, "uploads/u/never-stored"])
    assert files_under(root) == ["uploads/v/kept"]


def test_a_failed_save_leaves_no_folder_it_made(storage, root):
    storage.save("imports/kept/a.csv", io.BytesIO(b"a"))
    with pytest.raises(ConnectionResetError):
        storage.save("imports/5f0c/deeper/leads.csv", Blocks(b"x" * MIB, 10, fail_after=2))
    with pytest.raises(ConnectionResetError):
        storage.save("imports/kept/b.csv", Blocks(b"x" * MIB, 10, fail_after=2))

    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "imports",
        "imports/kept",
        "imports/kept/a.csv",
    ]
