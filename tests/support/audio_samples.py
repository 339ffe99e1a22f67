"""Small real recordings of every kind the app takes, made in pure Python for the tests."""

from __future__ import annotations

import io
import struct
import wave


def wav(seconds: float = 1.0, rate: int = 8000) -> bytes:
    """Mono 16-bit PCM silence."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(seconds * rate))
    return buffer.getvalue()


def mp3(frames: int = 100) -> bytes:
    """MPEG-1 Layer III frames, 128 kbit/s, 44.1 kHz, mono: 417 bytes and 1152 samples each."""
    header = bytes([0xFF, 0xFB, 0x90, 0xC0])
    return (header + bytes(417 - 4)) * frames


def adts(frames: int = 100, payload: int = 200) -> bytes:
    """AAC-LC in ADTS frames, 16 kHz mono, 1024 samples each."""
    length = 7 + payload
    sampling_index, channels = 8, 1  # 16000 Hz
    header = bytes(
        [
            0xFF,
            0xF1,  # MPEG-4, layer 0, no CRC
            (1 << 6) | (sampling_index << 2) | (channels >> 2),  # profile LC (object type 2 - 1)
            ((channels & 3) << 6) | (length >> 11),
            (length >> 3) & 0xFF,
            ((length & 7) << 5) | 0x1F,
            0xFC,
        ]
    )
    return (header + bytes(payload)) * frames


def amr(seconds: float = 1.0) -> bytes:
    """Raw AMR-NB at 12.2 kbit/s: a header byte and 31 bytes per 20 ms frame."""
    frame = bytes([(7 << 3) | 0x04]) + bytes(31)
    return b"#!AMR\n" + frame * int(seconds * 50)


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def _ogg_page(packet: bytes, *, sequence: int, granule: int, flags: int) -> bytes:
    segments = [255] * (len(packet) // 255) + [len(packet) % 255]
    header = struct.pack("<4sBBqIII", b"OggS", 0, flags, granule, 0x0E5C, sequence, 0)
    page = header + bytes([len(segments), *segments]) + packet
    crc = _ogg_crc(page)
    return page[:22] + struct.pack("<I", crc) + page[26:]


def opus(seconds: float = 1.0) -> bytes:
    """An Ogg Opus stream (48 kHz granules): its headers and one page of 20 ms packets."""
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, 16000, 0, 0)
    tags = b"OpusTags" + struct.pack("<I", 5) + b"edcrm" + struct.pack("<I", 0)
    granule = 312 + int(seconds * 48000)
    audio = b"\xf8\xff\xfe"  # a TOC byte of a 20 ms CELT frame, then padding
    return (
        _ogg_page(head, sequence=0, granule=0, flags=0x02)
        + _ogg_page(tags, sequence=1, granule=0, flags=0)
        + _ogg_page(audio, sequence=2, granule=granule, flags=0x04)
    )


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def mp4(seconds: float = 1.0, brand: bytes = b"M4A ") -> bytes:
    """An MP4 (M4A, or 3GP by its brand) with one sound track and its durations; no samples."""
    timescale = 8000
    duration = int(seconds * timescale)
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    mvhd = _box(
        b"mvhd",
        struct.pack(">BxxxIIII", 0, 0, 0, timescale, duration)
        + b"\x00\x01\x00\x00\x01\x00"
        + bytes(10)
        + matrix
        + bytes(24)
        + struct.pack(">I", 2),
    )
    mdhd = _box(b"mdhd", struct.pack(">BxxxIIIIHH", 0, 0, 0, timescale, duration, 0x55C4, 0))
    hdlr = _box(b"hdlr", struct.pack(">BxxxI4s12x", 0, 0, b"soun") + b"SoundHandler\x00")
    trak = _box(b"trak", _box(b"mdia", mdhd + hdlr + _box(b"minf", b"")))
    ftyp = _box(b"ftyp", brand + struct.pack(">I", 0) + brand + b"isom")
    return ftyp + _box(b"moov", mvhd + trak)


def _ebml(element_id: int, payload: bytes) -> bytes:
    """An EBML element with a one-byte size (payloads here are under 127 bytes)."""
    assert len(payload) < 127
    return (
        element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")
        + bytes([0x80 | len(payload)])
        + payload
    )


def webm(blocks: int = 3) -> bytes:
    """A WebM file as a phone's recorder writes it: the EBML header, then a Segment and a Cluster of
    unknown size (written live), one Opus audio track and `blocks` SimpleBlocks of 20 ms."""
    header = _ebml(0x1A45DFA3, bytes.fromhex("4286810142f7810142f2810442f381084282847765626d"))
    track = _ebml(0xAE, _ebml(0xD7, b"\x01") + _ebml(0x83, b"\x02") + _ebml(0x86, b"A_OPUS"))
    tracks = _ebml(0x1654AE6B, track)
    frames = b"".join(
        _ebml(0xA3, b"\x81" + (20 * n).to_bytes(2, "big") + b"\x80\xf8\xff\xfe") for n in range(blocks)
    )
    unknown = b"\x01\xff\xff\xff\xff\xff\xff\xff"
    cluster = bytes.fromhex("1f43b675") + unknown + _ebml(0xE7, b"\x00") + frames
    return header + bytes.fromhex("18538067") + unknown + tracks + cluster
