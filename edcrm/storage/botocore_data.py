"""A botocore session that loads a slimmed copy of the data an S3 client needs.

Building an S3 client makes botocore parse `endpoints.json` (1.25 MB of JSON: every AWS service in every
region) and S3's service model (1.4 MB, four fifths of it documentation strings), and the process keeps
the parsed dicts: about 10 MB of resident memory in every web and worker process, to call a dozen
S3 operations. Memory freed after parsing does not go back to the system either (the small objects of
the full and the slimmed copies are interleaved), so the slimming cannot happen in the process that
uses the data.

So the first process of a machine that needs an S3 client runs this file as a script, in a process of
its own: it writes, from the installed botocore's own data, `endpoints.json` with only the `s3` service
of each partition and S3's `service-2.json` without its documentation, into a cache folder named after
botocore's version (`~/.cache/edcrm/botocore-VERSION`, or `EDCRM_BOTOCORE_CACHE`). Clients then load
those files first: the same operations, shapes, errors, endpoints and rules, only smaller. If the copy
cannot be made (no writable cache folder), or `AWS_DATA_PATH` points at models of the user's own,
botocore's defaults are used, as before.

This file imports nothing of edcrm: it runs as a script (`python botocore_data.py FOLDER`). Delete the
folder to have it made again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading

import botocore
import botocore.session
from botocore.loaders import Loader

log = logging.getLogger(__name__)

#: Keys of the service model that only botocore's documentation generator reads.
DOC_KEYS = frozenset({"documentation", "documentationUrl"})
#: Top-level sections of the model kept whole.
KEEP_DOCS = frozenset({"clientContextParams"})

_lock = threading.Lock()


def cache_folder() -> str:
    base = os.environ.get("EDCRM_BOTOCORE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edcrm"
    )
    return os.path.join(base, f"botocore-{botocore.__version__}")


class SlimLoader(Loader):
    """botocore's loader, looking in the slimmed folder first. Its files count as botocore's own data
    (they are: a subset of it), so endpoint resolution behaves exactly as with the bundled files."""

    def __init__(self, folder: str):
        super().__init__(extra_search_paths=[folder])
        self._folder = os.path.realpath(folder)

    def is_builtin_path(self, path: str) -> bool:
        real = os.path.realpath(path)
        return super().is_builtin_path(path) or os.path.commonpath([self._folder, real]) == self._folder


def session() -> botocore.session.Session:
    """A botocore session for S3 clients that loads the slimmed data (made first if need be), or an
    ordinary session when it cannot."""
    botocore_session = botocore.session.Session()
    if os.environ.get("AWS_DATA_PATH"):
        return botocore_session
    folder = cache_folder()
    if not os.path.isdir(folder):
        with _lock:
            if not os.path.isdir(folder) and not _make(folder):
                return botocore_session
    botocore_session.register_component("data_loader", SlimLoader(folder))
    return botocore_session


def _make(folder: str) -> bool:
    try:
        subprocess.run(
            [sys.executable, "-I", os.path.abspath(__file__), folder],
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        log.warning("botocore's data stays unslimmed: %s %s", error, detail.decode(errors="replace")[-500:])
        return False
    return os.path.isdir(folder)


def _without_docs(value):
    if isinstance(value, dict):
        return {key: _without_docs(item) for key, item in value.items() if key not in DOC_KEYS}
    if isinstance(value, list):
        return [_without_docs(item) for item in value]
    return value


def build(folder: str) -> None:
    """Write the slimmed files into folder (atomically: the folder appears complete or not at all)."""
    loader = Loader()
    endpoints = loader.load_data("endpoints")
    endpoints["partitions"] = [
        {
            **partition,
            "services": {name: service for name, service in partition["services"].items() if name == "s3"},
        }
        for partition in endpoints["partitions"]
    ]
    version = loader.determine_latest_version("s3", "service-2")
    model = loader.load_data(f"s3/{version}/service-2")
    # botocore reads the documentation of the client context parameters (a few) as a required key.
    model = {key: value if key in KEEP_DOCS else _without_docs(value) for key, value in model.items()}
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".botocore-", dir=parent)
    try:
        os.makedirs(os.path.join(staging, "s3", version))
        with open(os.path.join(staging, "endpoints.json"), "w") as file:
            json.dump(endpoints, file)
        with open(os.path.join(staging, "s3", version, "service-2.json"), "w") as file:
            json.dump(model, file)
        try:
            os.rename(staging, folder)
        except OSError:
            if not os.path.isdir(folder):  # else another process made it first: the same files
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    build(sys.argv[1])
