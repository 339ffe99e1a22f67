"""Audio detection from the bytes, and durations, on small real recordings of every kind."""

from __future__ import annotations

import io
import random
import struct

import pytest

from edcrm.recordings import audio
from tests.support import audio_samples as samples


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


@pytest.mark.parametrize(
    ("data", "seconds"),
    [
        (samples.wav(2.0), 2.0),
        (samples.wav(1.0) + bytes(5000), 1.0),  # bytes after the data chunk are no harm
        (samples.mp3(frames=100), 100 * 1152 / 44100),
        (samples.adts(frames=100), 100 * 1024 / 16000),
        (samples.mp4(3.0), 3.0),
        (samples.mp4(2.5, brand=b"3gp4"), 2.5),
        (samples.amr(1.5), 1.5),
        (samples.opus(1.0), 1.0),
        (samples.webm(), None),
    ],
)
def test_a_whole_recording_of_each_kind_passes_the_examination(data, seconds):
    found = audio.examine(audio.detect(data[: audio.SNIFF_BYTES]), io.BytesIO(data))
    assert found == (pytest.approx(seconds, abs=0.01) if seconds is not None else None)


_noise = random.Random(20).randbytes
#: A WAV header announcing 2 s of 8 kHz 16-bit audio (32,000 bytes), then 1,000 of them.
_CUT_WAV = samples.wav(2.0)[:1044]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"RIFF\x24\x00\x00\x00WAVE", "no audio format and data"),
        (b"RIFF\x24\x00\x00\x00WAVE" + _noise(4000), "no audio format and data"),
        (b"OggS" + _noise(4000), "cannot be read as OGG"),
        (b"ID3" + _noise(4000), "cannot be read as MP3"),
        (
            b"ID3\x03\x00\x00\x00\x00\x00\x00" + _noise(40_000),
            "cannot be read as MP3",
        ),  # a real tag, then noise
        (bytes([0xFF, 0xFB, 0x90, 0xC0]) + _noise(4000), "cannot be read as MP3"),
        (bytes([0xFF, 0xF1]) + _noise(4000), "cannot be read as AAC"),
        (struct.pack(">I", 24) + b"ftypM4A " + _noise(4000), "cannot be read as M4A"),
        (samples.mp4(1.0)[:40], "cannot be read as M4A"),
        (b"#!AMR\n", "holds no audio"),
        (b"#!AMR\n" + _noise(4000), "frames cannot be read"),
        (samples.wav(0.0), "holds no audio"),
        (_CUT_WAV, "cut short (its header announces 32000 bytes of audio, only 1000 arrived)"),
        (samples.opus(1.0)[:60], "cannot be read as OPUS"),
        (samples.webm()[:28], "no recording after it"),  # the EBML header alone
        (samples.webm()[:40], "holds no audio"),  # and the start of its Segment
        (samples.webm(blocks=0), "holds no audio"),
        (samples.webm()[:4] + _noise(4000), "WebM audio, but its header cannot be read"),
    ],
)
def test_bytes_that_only_start_like_audio_are_refused_in_plain_words(data, reason):
    kind = audio.detect(data[: audio.SNIFF_BYTES])
    with pytest.raises(audio.NotAudio) as refused:
        audio.examine(kind, io.BytesIO(data))
    message = str(refused.value)
    assert reason in message
    assert "Error" not in message and "/" not in message and "\\" not in message  # no exception text


def test_a_damaged_header_gives_no_length_rather_than_an_error():
    broken = samples.mp4(1.0)[:40]  # ftyp and the start of moov only
    assert audio.duration(audio.detect(broken), io.BytesIO(broken)) is None
    amr_with_a_bad_frame = samples.amr(0.2) + bytes([12 << 3]) + bytes(40)  # frame type 12 is never sent
    assert audio.duration(audio.AMR, io.BytesIO(amr_with_a_bad_frame)) is None
