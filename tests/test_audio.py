"""Audio detection from the bytes, and durations, on small real recordings of every kind."""

from __future__ import annotations

import io

import audio_samples as samples
import pytest

from edcrm.recordings import audio


@pytest.mark.parametrize(
    ("data", "content_type", "extension", "seconds"),
    [
        (samples.wav(2.0), "audio/wav", ".wav", 2.0),
        (samples.mp3(frames=100), "audio/mpeg", ".mp3", 100 * 1152 / 44100),
        (samples.adts(frames=100), "audio/aac", ".aac", 100 * 1024 / 16000),
        (samples.mp4(3.0), "audio/mp4", ".m4a", 3.0),
        (samples.mp4(2.5, brand=b"3gp4"), "audio/3gpp", ".3gp", 2.5),
        (samples.amr(1.5), "audio/amr", ".amr", 1.5),
        (samples.opus(1.0), "audio/ogg", ".opus", 1.0),
        (samples.webm(), "audio/webm", ".webm", None),  # detected; no reader for its length
    ],
)
def test_each_kind_is_recognised_with_its_length(data, content_type, extension, seconds):
    kind = audio.detect(data[: audio.SNIFF_BYTES])
    assert (kind.content_type, kind.extension) == (content_type, extension)
    found = audio.duration(kind, io.BytesIO(data))
    assert found == (pytest.approx(seconds, abs=0.01) if seconds is not None else None)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is a text file",
        b"\x89PNG\r\n\x1a\n" + bytes(56),
        b"%PDF-1.7\n" + bytes(55),
        b"PK\x03\x04" + bytes(60),  # a ZIP (or .xlsx, .docx)
        b"RIFF\x00\x00\x00\x00AVI LIST",  # RIFF, but video
    ],
)
def test_what_is_not_audio_is_refused_with_a_reason(data):
    with pytest.raises(audio.NotAudio, match="not audio"):
        audio.detect(data)


def test_a_damaged_header_gives_no_length_rather_than_an_error():
    broken = samples.mp4(1.0)[:40]  # ftyp and the start of moov only
    assert audio.duration(audio.detect(broken), io.BytesIO(broken)) is None
    amr_with_a_bad_frame = samples.amr(0.2) + bytes([12 << 3]) + bytes(40)  # frame type 12 is never sent
    assert audio.duration(audio.AMR, io.BytesIO(amr_with_a_bad_frame)) is None
