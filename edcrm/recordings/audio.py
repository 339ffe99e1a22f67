"""What kind of audio a recording is, from its bytes, and how long it lasts.

The type comes from the file's first bytes (its signature), never from the name or a client's word.
A signature alone proves nothing (`RIFF....WAVE` and random bytes after it is no recording), so
examine() then parses the container: with mutagen where it can (WAV, MP3, AAC/ADTS, M4A/MP4/3GP,
OGG/Opus/Vorbis), by walking the frames of raw AMR and the elements of WebM, which mutagen does not
read. A file that does not parse, holds no audio or is cut short is NotAudio, with a reason in plain
words; a whole one gives its duration. Everything reads a file on disk by seeking, so a long recording
is never in memory whole.

Raw AMR's duration is the count of its frames, which only a walk over every byte gives: for a recording
stored by parts as it arrives (tus), AmrCounter walks them as they pass, across requests (its state is
the upload's audio_state), and examine_counted then says what examine would have, without a re-read.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from typing import IO

import mutagen
from mutagen.aac import AAC as AACFile
from mutagen.mp3 import MP3 as MP3File
from mutagen.mp4 import MP4 as MP4File
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

log = logging.getLogger(__name__)

#: Enough of the head of a file to recognise every type below.
SNIFF_BYTES = 64


class NotAudio(ValueError):
    """The bytes are not a recording of a kind this app takes."""


@dataclass(frozen=True)
class AudioType:
    content_type: str
    extension: str


WAV = AudioType("audio/wav", ".wav")
MP3 = AudioType("audio/mpeg", ".mp3")
AAC = AudioType("audio/aac", ".aac")
M4A = AudioType("audio/mp4", ".m4a")
THREE_GP = AudioType("audio/3gpp", ".3gp")
AMR = AudioType("audio/amr", ".amr")
AMR_WB = AudioType("audio/amr-wb", ".awb")
OPUS = AudioType("audio/ogg", ".opus")
OGG = AudioType("audio/ogg", ".ogg")
WEBM = AudioType("audio/webm", ".webm")

AMR_MAGIC, AMR_WB_MAGIC = b"#!AMR\n", b"#!AMR-WB\n"
#: Bytes of data after the header byte, by frame type (RFC 4867 section 3.6): speech modes, SID
#: (comfort noise), and "no data" / "speech lost". A type missing here is never sent.
AMR_FRAME_BYTES = {0: 12, 1: 13, 2: 15, 3: 17, 4: 19, 5: 20, 6: 26, 7: 31, 8: 5, 15: 0}
AMR_WB_FRAME_BYTES = {0: 17, 1: 23, 2: 32, 3: 36, 4: 40, 5: 46, 6: 50, 7: 58, 8: 60, 9: 5, 14: 0, 15: 0}
AMR_FRAME_SECONDS = 0.020


#: mutagen's reader of each type (told, not guessed: its guess needs a file name for some).
_READERS = {
    WAV: WAVE,
    MP3: MP3File,
    AAC: AACFile,
    M4A: MP4File,
    THREE_GP: MP4File,
    OPUS: OggOpus,
    OGG: OggVorbis,
}


def detect(head: bytes) -> AudioType:
    """The audio type of a file starting with head (its first SNIFF_BYTES); NotAudio if none."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return WAV
    if head.startswith(AMR_WB_MAGIC):
        return AMR_WB
    if head.startswith(AMR_MAGIC):
        return AMR
    if head[:4] == b"OggS":
        return OPUS if head[28:36] == b"OpusHead" else OGG
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska or WebM; phones record WebM
        return WEBM
    if head[4:8] == b"ftyp":
        return THREE_GP if head[8:10] == b"3g" else M4A
    if head[:3] == b"ID3":
        return MP3
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # an MPEG audio frame sync
        layer = (head[1] >> 1) & 0b11
        if layer == 0b00 and head[1] & 0xF6 == 0xF0:  # ADTS: MPEG-2/4 AAC, layer bits 00
            return AAC
        if layer == 0b01:  # Layer III
            return MP3
    raise NotAudio("the bytes are not audio of a known kind (WAV, MP3, AAC, M4A, 3GP, AMR, OGG/Opus or WebM)")


_AMR_FRAMES = {AMR: (AMR_MAGIC, AMR_FRAME_BYTES), AMR_WB: (AMR_WB_MAGIC, AMR_WB_FRAME_BYTES)}
#: What mutagen raises, besides its own errors, on bytes that only look like its format.
_PARSE_ERRORS = (mutagen.MutagenError, ValueError, LookupError, ArithmeticError, struct.error, EOFError)


def examine(audio_type: AudioType, file: IO[bytes]) -> float | None:
    """Check that file is a whole recording of audio_type; its length in seconds (None for WebM, whose
    length is often not written down). NotAudio, with the reason, if its container does not parse,
    holds no audio, or is shorter than its header says."""
    name = audio_type.extension.removeprefix(".").upper()
    file.seek(0)
    if audio_type in (AMR, AMR_WB):
        magic, frame_bytes = (
            (AMR_MAGIC, AMR_FRAME_BYTES) if audio_type is AMR else (AMR_WB_MAGIC, AMR_WB_FRAME_BYTES)
        )
        seconds = _amr_duration(file, len(magic), frame_bytes)
        if seconds is None:
            raise NotAudio(f"it looks like {name} audio, but its frames cannot be read")
        if not seconds:
            raise NotAudio(f"the {name} file holds no audio")
        return seconds
    if audio_type is WEBM:
        _check_webm(file)
        return None
    if audio_type is WAV:
        _check_wav(file)
    file.seek(0)
    try:
        parsed = _READERS[audio_type](file)
    except _PARSE_ERRORS as error:
        log.info("a %s recording that does not parse: %s", audio_type.content_type, error)
        raise NotAudio(f"it looks like {name} audio, but its contents cannot be read as {name}") from None
    length = getattr(getattr(parsed, "info", None), "length", None)
    if not length or length <= 0:
        raise NotAudio(f"the {name} file holds no audio")
    return round(float(length), 3)


def duration(audio_type: AudioType, file: IO[bytes]) -> float | None:
    """The recording's length in seconds, or None where it cannot be read (WebM, a damaged file)."""
    try:
        return examine(audio_type, file)
    except NotAudio as error:
        log.info("no duration for a %s recording: %s", audio_type.content_type, error)
        return None


def _file_size(file: IO[bytes]) -> int:
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    return size


def _check_wav(file: IO[bytes]) -> None:
    """The RIFF chunks up to `data`: a format chunk, and audio data that is in the file whole (mutagen
    reads the length from the header, which a cut-off file still has)."""
    size, offset, has_format = _file_size(file), 12, False
    while offset + 8 <= size:
        file.seek(offset)
        chunk_id, chunk_size = struct.unpack("<4sI", file.read(8))
        if chunk_id == b"fmt ":
            has_format = chunk_size >= 16
        elif chunk_id == b"data":
            if not has_format:
                break
            if chunk_size == 0:
                raise NotAudio("the WAV file holds no audio")
            if offset + 8 + chunk_size > size:
                raise NotAudio(
                    f"the WAV file is cut short (its header announces {chunk_size} bytes of audio, "
                    f"only {size - offset - 8} arrived)"
                )
            return
        offset += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to an even size
    raise NotAudio("it looks like WAV audio, but it has no audio format and data in it")


# -- WebM (Matroska's EBML) --------------------------------------------------------------------------------

_EBML, _DOC_TYPE, _SEGMENT, _CLUSTER = 0x1A45DFA3, 0x4282, 0x18538067, 0x1F43B675
_TRACKS, _SIMPLE_BLOCK, _BLOCK_GROUP = 0x1654AE6B, 0xA3, 0xA0
#: Elements looked at before a WebM file without a block of audio is given up on.
_WEBM_MAX_ELEMENTS = 10_000


def _ebml_number(file: IO[bytes], *, keep_marker: bool) -> tuple[int, bool]:
    """An EBML variable-length number (an element ID with its marker bit, or a size without), and
    whether its value bits are all ones (for a size: "unknown", as live recorders write)."""
    first = file.read(1)
    if not first or first[0] == 0:
        raise NotAudio("it looks like WebM audio, but its contents cannot be read as WebM")
    length = 9 - first[0].bit_length()
    rest = file.read(length - 1)
    if len(rest) < length - 1:
        raise NotAudio("the WebM file is cut short")
    value = first[0] if keep_marker else first[0] & (0xFF >> length)
    all_ones = value == (0xFF >> length)
    for byte in rest:
        value, all_ones = (value << 8) | byte, all_ones and byte == 0xFF
    return value, all_ones


def _ebml_element(file: IO[bytes]) -> tuple[int, int | None, int]:
    """The next element's header: (ID, size or None if unknown, where its data starts)."""
    element_id, _ = _ebml_number(file, keep_marker=True)
    size, unknown = _ebml_number(file, keep_marker=False)
    return element_id, (None if unknown else size), file.tell()


def _check_webm(file: IO[bytes]) -> None:
    """An EBML header naming WebM or Matroska, then a Segment with tracks and at least one block of
    media in a Cluster (a file of headers only holds no audio)."""
    size = _file_size(file)
    element_id, header_size, start = _ebml_element(file)
    if element_id != _EBML or header_size is None or start + header_size > size:
        raise NotAudio("it looks like WebM audio, but its header cannot be read")
    doc_type = None
    while file.tell() < start + header_size:
        child, child_size, at = _ebml_element(file)
        if child_size is None:
            break
        if child == _DOC_TYPE:
            doc_type = file.read(min(child_size, 16)).rstrip(b"\0")  # its size is the file's word only
        file.seek(at + child_size)
    if doc_type not in (b"webm", b"matroska"):
        raise NotAudio("it looks like WebM audio, but its header names no WebM document")
    file.seek(start + header_size)
    if start + header_size >= size:
        raise NotAudio("it is a WebM header with no recording after it")
    element_id, segment_size, segment = _ebml_element(file)
    if element_id != _SEGMENT:
        raise NotAudio("it is a WebM header with no recording after it")
    end = size if segment_size is None else min(size, segment + segment_size)
    has_tracks = False
    for _ in range(_WEBM_MAX_ELEMENTS):
        if file.tell() + 2 > end:
            break
        element_id, element_size, at = _ebml_element(file)
        if element_id == _TRACKS:
            has_tracks = True
        elif element_id in (_SIMPLE_BLOCK, _BLOCK_GROUP):
            if not has_tracks:
                break
            return
        if element_id == _CLUSTER:
            continue  # step into it: its blocks follow its header
        if element_size is None:
            break  # only a Segment or a Cluster may have an unknown size
        file.seek(at + element_size)
    raise NotAudio("the WebM file holds no audio")


def _amr_duration(file: IO[bytes], magic_length: int, frame_bytes: dict[int, int]) -> float | None:
    """Walk the frames of raw AMR (RFC 4867 section 5): a header byte whose frame type gives the size
    of the data that follows; every frame lasts 20 ms. None if a frame type is one never sent."""
    file.seek(magic_length)
    frames = 0
    while header := file.read(1):
        size = frame_bytes.get((header[0] >> 3) & 0x0F)
        if size is None:
            return None
        if size and len(file.read(size)) < size:
            break  # a truncated last frame
        frames += 1
    return round(frames * AMR_FRAME_SECONDS, 3)


# -- raw AMR counted as its bytes arrive -------------------------------------------------------------------


class AmrCounter:
    """Walks the frames of raw AMR as its bytes pass, in order and in any number of requests, so that
    a recording stored by parts (tus) has its duration without being read again: raw AMR has no header
    saying how long it is, only frames to count.

    Its state, a small dict saved in RecordingUpload.audio_state between requests, is where the next
    frame header is (an offset in the file), how many frames have started, and whether a frame type
    never sent was met (then the file is not AMR: examine_counted says so, as examine would).
    """

    def __init__(self, state: dict):
        self.kind = state["kind"]
        self.next = int(state["next"])
        self.frames = int(state["frames"])
        self.valid = bool(state["valid"])
        self._frame_bytes = AMR_FRAME_BYTES if self.kind == "amr" else AMR_WB_FRAME_BYTES

    @classmethod
    def start(cls, audio_type: AudioType) -> AmrCounter:
        magic = AMR_MAGIC if audio_type is AMR else AMR_WB_MAGIC
        kind = "amr" if audio_type is AMR else "amr-wb"
        return cls({"kind": kind, "next": len(magic), "frames": 0, "valid": True})

    def state(self) -> dict:
        return {"kind": self.kind, "next": self.next, "frames": self.frames, "valid": self.valid}

    def feed(self, offset: int, data: bytes | memoryview) -> None:
        """The bytes at `offset` of the file; called with every byte after the magic, in order."""
        end = offset + len(data)
        frame_bytes = self._frame_bytes
        while self.valid and self.next < end:
            if self.next < offset:
                raise ValueError(f"AMR bytes skipped: the next frame is at {self.next}, data from {offset}")
            size = frame_bytes.get((data[self.next - offset] >> 3) & 0x0F)
            if size is None:
                self.valid = False
                break
            self.frames += 1
            self.next += 1 + size


def examine_counted(audio_type: AudioType, state: dict, size: int) -> float:
    """What examine gives a raw AMR file of `size` bytes, from the state an AmrCounter left after all
    of them: its length in seconds, or NotAudio with the same reasons."""
    name = audio_type.extension.removeprefix(".").upper()
    if not state.get("valid", False):
        raise NotAudio(f"it looks like {name} audio, but its frames cannot be read")
    frames = int(state["frames"]) - (1 if int(state["next"]) > size else 0)  # a truncated last frame
    if frames <= 0:
        raise NotAudio(f"the {name} file holds no audio")
    return round(frames * AMR_FRAME_SECONDS, 3)


def counts_at_ingest(audio_type: AudioType) -> bool:
    """Is this a type whose duration is counted as its bytes arrive (AmrCounter)?"""
    return audio_type in (AMR, AMR_WB)


def counter_of(state: dict | None) -> AmrCounter | None:
    """The counter of a saved audio_state, or None when nothing is counted."""
    if not state or state.get("kind") not in ("amr", "amr-wb"):
        return None
    return AmrCounter(state)
