"""A slimmed copy of the botocore data an S3 client needs, made at install time, and a session that
loads it.

Building an S3 client makes botocore parse `endpoints.json` (1.25 MB of JSON: every AWS service in every
region) and S3's service model (1.4 MB, four fifths of it documentation strings), and the process keeps
the parsed dicts: about 10 MB of resident memory in every web and worker process, to call a dozen
S3 operations. Memory freed after parsing does not go back to the system either (the small objects of
the full and the slimmed copies are interleaved), so the slimming cannot happen in the process that
uses the data.

So the copy is made once per installation, by `make`'s install step (`python -m
edcrm.storage.botocore_data`): from the installed botocore's own data, `endpoints.json` with only the
`s3` service of each partition and S3's `service-2.json` without its documentation, in a folder named
after botocore's version, `share/edcrm/botocore-VERSION` under the Python environment (`sys.prefix`,
the virtualenv), or under `EDCRM_BOTOCORE_CACHE`. S3 clients then load those files first: the same
operations, shapes, errors, endpoints and rules, only smaller. Where the folder is missing (an install
without make, or a botocore upgraded since), or `AWS_DATA_PATH` points at models of the user's own,
clients load botocore's bundled data: the same client, 10 MB larger.

Delete the folder and run the module again to remake it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import botocore
import botocore.session
from botocore.loaders import Loader

#: Keys of the service model that only botocore's documentation generator reads.
DOC_KEYS = frozenset({"documentation", "documentationUrl"})
#: Top-level sections of the model kept whole.
KEEP_DOCS = frozenset({"clientContextParams"})


def data_folder() -> str:
    """Where the slimmed data of the installed botocore lives (whether it was made or not)."""
    base = os.environ.get("EDCRM_BOTOCORE_CACHE") or os.path.join(sys.prefix, "share", "edcrm")
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
    """A botocore session for S3 clients that loads the slimmed data, or an ordinary session where the
    data was not made (or the user has models of their own)."""
    botocore_session = botocore.session.Session()
    folder = data_folder()
    if os.environ.get("AWS_DATA_PATH") or not os.path.isdir(folder):
        return botocore_session
    botocore_session.register_component("data_loader", SlimLoader(folder))
    return botocore_session


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


def main(argv: list[str] | None = None) -> int:
    """`python -m edcrm.storage.botocore_data [FOLDER]`: make the slimmed data unless it is there."""
    parser = argparse.ArgumentParser(description="Make the slimmed botocore data that S3 clients load.")
    parser.add_argument("folder", nargs="?", help="default: the folder S3 clients look in")
    folder = parser.parse_args(argv).folder or data_folder()
    if os.path.isdir(folder):
        print(f"botocore's slimmed S3 data is in {folder}")
        return 0
    try:
        build(folder)
    except OSError as error:
        print(f"botocore's slimmed S3 data could not be made ({error}): S3 clients load botocore's own")
        return 1
    print(f"botocore's slimmed S3 data made in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
