"""One upload, one writer, on any number of hosts: two gunicorns, each in a working folder, instance
folder and TMPDIR of its own (nothing local in common), on one PostgreSQL, Redis and bucket (moto's S3
server, then Ceph RGW), behind a proxy that hands each request to the next one. tus-js-client's PATCHes
of one upload reach them alternately, and the Recording is byte-identical to the file.

A module of its own: its stack and test_tus_clients.py's would share the session's Redis database, and
one stack's worker would take the other's jobs.
"""

from __future__ import annotations

import itertools

import pytest

from tests.support.round_robin_proxy import RoundRobinProxy
from tests.support.stack import running_stack
from tests.support.tus_clients import (
    MIB,
    SETTINGS,
    TUS,
    assert_recorded,
    metadata,
    recording,
    require_node_clients,
    tus_js,
    upload_id_of,
)


@pytest.fixture
def two_webs(postgres_url, redis_url, s3_endpoint, tmp_path):
    """The stack with two webs, and the round-robin proxy in front of them."""
    require_node_clients()
    with (
        running_stack(
            postgres_url, redis_url, s3_endpoint, tmp_path / "stack", webs=2, settings=SETTINGS
        ) as stack,
        RoundRobinProxy(stack.bases) as proxy,
    ):
        yield stack, proxy


def test_two_webs_take_alternate_patches_of_one_upload(two_webs, tmp_path):
    stack, proxy = two_webs
    call_log_id = stack.call_log_id
    data = recording(tmp_path / "call.wav", 16 * MIB + 13, seed=11)

    result = tus_js(
        stack,
        tmp_path / "call.wav",
        *metadata(call_log_id, data),
        "--chunk-size",
        str(3 * MIB),
        endpoint=f"{proxy.url}{TUS}",
    )

    patched = proxy.backends_of("PATCH")
    assert len(patched) == 6 and set(patched) == {0, 1}
    assert all(this != after for this, after in itertools.pairwise(patched))  # alternately
    assert result["url"].startswith(proxy.url)
    assert_recorded(stack, call_log_id, upload_id_of(result["url"]), data)
