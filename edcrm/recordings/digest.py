"""A SHA-256 whose state can be saved between requests and taken up by another process.

A recording's whole-file SHA-256 is computed as its bytes arrive, over many requests that different web
processes (on different hosts) may serve: each takes up the state the previous one left in the
database, hashes its bytes and stores the state again. hashlib's objects cannot be saved, so this uses
OpenSSL's SHA-256 directly (the libcrypto that hashlib itself links), whose state is a plain struct of
eight 32-bit words, the bit count and the pending block (`SHA256_CTX` in openssl/sha.h, 112 bytes): it
is saved and restored as those bytes, and hashing runs at OpenSSL's speed.

Where no such libcrypto is found, `available()` is False and callers hash the stored object instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib

#: sizeof(SHA256_CTX): unsigned int h[8], Nl, Nh, data[16], num, md_len.
STATE_BYTES = 112
#: A saved state says which layout it is, so a future layout is never misread.
VERSION = b"S1"


@functools.cache
def _libcrypto():
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        library = ctypes.CDLL(name)
        for function in ("SHA256_Init", "SHA256_Update", "SHA256_Final"):
            getattr(library, function).restype = ctypes.c_int
        library.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    # The layout is checked once against hashlib, not trusted.
    probe = ResumableSha256(_library=library)
    probe.update(b"edcrm" * 100)
    resumed = ResumableSha256.restore(probe.save(), _library=library)
    resumed.update(b"!")
    if resumed.hexdigest() != hashlib.sha256(b"edcrm" * 100 + b"!").hexdigest():
        return None
    return library


def available() -> bool:
    """Can states be saved and restored on this machine?"""
    return _libcrypto() is not None


class ResumableSha256:
    """hashlib.sha256's update/hexdigest, plus save() and restore()."""

    def __init__(self, *, _library=None):
        self._library = _library or _libcrypto()
        if self._library is None:
            raise RuntimeError("no libcrypto with SHA256_Init: resumable SHA-256 is unavailable")
        self._context = ctypes.create_string_buffer(STATE_BYTES)
        self._library.SHA256_Init(self._context)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        block = bytes(data) if not isinstance(data, bytes) else data
        self._library.SHA256_Update(self._context, block, len(block))

    def copy(self) -> ResumableSha256:
        twin = ResumableSha256(_library=self._library)
        ctypes.memmove(twin._context, self._context, STATE_BYTES)
        return twin

    def hexdigest(self) -> str:
        """The digest of everything so far; the state itself is left as it is."""
        out = ctypes.create_string_buffer(32)
        self._library.SHA256_Final(out, self.copy()._context)
        return out.raw.hex()

    def save(self) -> bytes:
        return VERSION + self._context.raw

    @classmethod
    def restore(cls, state: bytes, *, _library=None) -> ResumableSha256:
        if len(state) != len(VERSION) + STATE_BYTES or not state.startswith(VERSION):
            raise ValueError("not a saved SHA-256 state")
        resumed = cls(_library=_library)
        ctypes.memmove(resumed._context, state[len(VERSION) :], STATE_BYTES)
        return resumed


def resume(state: bytes | None) -> ResumableSha256:
    """The hash of a saved state, or a new one."""
    return ResumableSha256.restore(state) if state else ResumableSha256()
