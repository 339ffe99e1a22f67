"""What kind of audio a recording is, from its bytes, and how long it lasts.

The type comes from the file's first bytes (its signature), never from the name or a client's word.
The duration is read with mutagen where it can (WAV, MP3, AAC/ADTS, M4A/MP4/3GP, OGG/Opus/Vorbis) and,
for raw AMR, which mutagen does not read, by walking its frames. Both read a file on disk by seeking,
so a long recording is never in memory whole.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import BinaryIO

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


def duration(audio_type: AudioType, file: BinaryIO) -> float | None:
    """The recording's length in seconds, or None where it cannot be read (WebM, a damaged header)."""
    file.seek(0)
    if audio_type is AMR:
        return _amr_duration(file, len(AMR_MAGIC), AMR_FRAME_BYTES)
    if audio_type is AMR_WB:
        return _amr_duration(file, len(AMR_WB_MAGIC), AMR_WB_FRAME_BYTES)
    reader = _READERS.get(audio_type)
    if reader is None:
        return None  # WebM: mutagen has no reader for it, and none other is worth a dependency here
    try:
        parsed = reader(file)
    except mutagen.MutagenError as error:
        log.info("no duration for a %s recording: %s", audio_type.content_type, error)
        return None
    length = getattr(getattr(parsed, "info", None), "length", None)
    return round(float(length), 3) if length else None


def _amr_duration(file: BinaryIO, magic_length: int, frame_bytes: dict[int, int]) -> float | None:
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
