"""BODY_TIMEOUT_S: a stalled body read is answered 408 body_timeout, and what gunicorn's event loop makes
of a request's first bytes (edcrm.gunicorn_worker), byte by byte."""

from __future__ import annotations

import pytest

from edcrm.bodytimeout import BodyTimeout, TimedInput
from edcrm.config import ConfigError, body_timeout_s
from edcrm.gunicorn_worker import MAX_HEAD_BYTES, PREBUFFER_BYTES, Request


class Stalled:
    """A socket's stream whose client sent `data` and then nothing (the read timed out)."""

    def __init__(self, data: bytes = b""):
        self.data = data

    def read(self, size=-1):
        if self.data:
            data, self.data = self.data, b""
            return data
        raise TimeoutError("timed out")


def test_body_timeout_s_defaults_to_30_and_must_be_positive():
    assert body_timeout_s({}) == 30
    assert body_timeout_s({"BODY_TIMEOUT_S": "2"}) == 2
    with pytest.raises(ConfigError):
        body_timeout_s({"BODY_TIMEOUT_S": "0"})


def test_a_timed_out_read_raises_body_timeout_not_an_os_error():
    stream = TimedInput(Stalled(b"abc"), 30)
    assert stream.read(3) == b"abc"
    with pytest.raises(BodyTimeout) as raised:
        stream.read(10)
    assert not isinstance(raised.value, OSError)  # neither "client gone" (400) nor "storage down" (503)
    assert raised.value.code == 408


def test_a_stalled_json_body_is_answered_408_body_timeout(client):
    answer = client.post(
        "/api/auth/token",
        data=b" " * 1000,
        content_type="application/json",
        environ_overrides={"wsgi.input": Stalled(b'{"email": ')},
    )
    assert answer.status_code == 408
    assert answer.json["error"]["code"] == "body_timeout"


def test_a_stalled_form_is_answered_408_on_a_page(client):
    answer = client.post(
        "/login",
        data=b" " * 1000,
        content_type="application/x-www-form-urlencoded",
        environ_overrides={"wsgi.input": Stalled(b"email=a")},
    )
    assert answer.status_code == 408
    assert b"<html" in answer.data.lower()


def fed(*pieces: bytes) -> tuple[Request, list[str | None]]:
    """A Request given pieces one after the other, and what examine() said after each."""
    request = Request(b"", deadline=0)
    states = []
    for piece in pieces:
        request.data += piece
        states.append(request.examine())
    return request, states


def one_by_one(data: bytes) -> list[str | None]:
    return fed(*(data[i : i + 1] for i in range(len(data))))[1]


def test_a_request_without_a_body_is_complete_with_its_head():
    states = one_by_one(b"\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert states[-1] == "complete"
    assert set(states[:-1]) == {None}


def test_a_short_body_is_read_whole_and_a_stalled_one_never_reaches_a_thread():
    head = b"POST /api/auth/token HTTP/1.1\r\nContent-Length: 12\r\n\r\n"
    assert fed(head, b'{"a": ', b'"bcd"}')[1] == [None, None, "complete"]
    assert fed(head + b"{")[1] == [None]


def test_a_long_body_goes_to_a_thread_once_its_start_is_in():
    head = b"PUT /x HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n"
    assert fed(head, b"a" * (PREBUFFER_BYTES - 1), b"a")[1] == [None, None, "streams"]


def test_expect_100_continue_goes_to_a_thread_at_once():
    head = b"PUT /x HTTP/1.1\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
    assert fed(head)[1] == ["streams"]
    assert fed(head + b"0123456789")[1] == ["complete"]


def test_a_chunked_body_is_complete_through_its_trailers():
    head = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"5;ext=1\r\nhello\r\n1\r\n \r\n0\r\nX-Trailer: 1\r\n\r\n"
    states = one_by_one(head + body)
    assert states[-1] == "complete"
    assert set(states[:-1]) == {None}


def test_a_long_chunked_body_goes_to_a_thread():
    head = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n" % PREBUFFER_BYTES + b"a" * PREBUFFER_BYTES
    assert fed(head, chunk)[1] == [None, "streams"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: -3\r\n\r\n",
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES,
    ],
    ids=["length+chunked", "two-lengths", "bad-length", "not-chunked", "bad-chunk", "bare-lf", "huge-head"],
)
def test_framing_the_loop_cannot_tell_is_left_to_gunicorns_parser_in_a_thread(request_bytes):
    assert fed(request_bytes)[1] == ["streams"]


def test_pipelined_requests_are_complete_with_the_first():
    first = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    assert fed(first + b"GET /b HTTP/1.1\r\n")[1] == ["complete"]
