"""Large uploads keep the web and the worker small: the production processes (gunicorn and a dramatiq
worker) on S3, their peak RSS (VmHWM) read before and after an upload much larger than their budget.

Before each measure, a small upload of the same kind has run: the processes have built their S3 clients
and imported what the path needs, so what is left to grow is what the bytes cost.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from tests.support.audio_samples import wav
from tests.support.processes import wait_for_job
from tests.support.stack import Stack, send_chunks

MIB = 1024 * 1024
#: Less than a 16 MiB chunk (the default MAX_CHUNK_BYTES) or two 8 MiB S3 parts.
MAX_GROWTH_MB = 16


def peaks(stack: Stack) -> dict[int, float]:
    return {**stack.web.memory_mb(), **stack.worker.memory_mb()}


def growth(before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
    """MB each process grew by, named by its pid and command."""
    return {f"{pid} {_command(pid)}": round(after[pid] - before.get(pid, 0), 1) for pid in after}


def _command(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(Path(arg.decode()).name for arg in argv[:3] if arg)


def recorded(stack: Stack, data: bytes, parts: int) -> None:
    """data sent in `parts` chunks through the API, then finalized by the worker."""
    upload_id = send_chunks(stack, data, parts, order=range(parts))
    job_id = stack.api(f"/api/recordings/uploads/{upload_id}/complete", "post").json()["job_id"]
    wait_for_job(stack.engine, job_id, "succeeded", timeout=120, watch=stack.worker)


def test_chunks_as_large_as_the_limit(stack):
    """Three 16 MiB chunks (the default MAX_CHUNK_BYTES) go through the web to S3 and back through the
    worker block by block."""
    recorded(stack, wav(1.0), 1)
    before = peaks(stack)
    audio = wav(1.0) + random.Random(3).randbytes(3 * 16 * MIB - len(wav(1.0)))
    recorded(stack, audio, 3)
    grown = growth(before, peaks(stack))
    assert max(grown.values()) < MAX_GROWTH_MB, f"peak RSS growth in MB, by process: {grown}"


def test_a_one_shot_recording(stack):
    """A 48 MiB recording in one request: the web streams it to S3 from disk, the worker back."""

    def one_shot(data: bytes) -> None:
        files = {"file": ("call.wav", io.BytesIO(data), "audio/wav")}
        answer = stack.api(f"/api/call-logs/{stack.call_log_id}/recording", "post", files=files)
        assert answer.status_code == 202, answer.text
        wait_for_job(stack.engine, answer.json()["job_id"], "succeeded", timeout=120, watch=stack.worker)

    one_shot(wav(1.0))
    before = peaks(stack)
    one_shot(wav(1.0) + random.Random(4).randbytes(48 * MIB))
    grown = growth(before, peaks(stack))
    assert max(grown.values()) < MAX_GROWTH_MB, f"peak RSS growth in MB, by process: {grown}"


def test_a_large_csv_of_leads(stack):
    """A 40 MiB CSV through the web to S3 (rows with long notes: 1,300 leads, a quick import). The web
    only: the import's own memory is bench/import.py's."""

    def imported(rows: int, note_bytes: int) -> None:
        lines = ["name,phone,notes"] + [f"Student {n},+9198{n:08d},{'x' * note_bytes}" for n in range(rows)]
        files = {"file": ("leads.csv", io.BytesIO("\n".join(lines).encode()), "text/csv")}
        data = {"telecaller_ids": ",".join(map(str, stack.telecaller_ids))}
        answer = stack.api("/api/imports", "post", session=stack.admin, files=files, data=data)
        assert answer.status_code == 202, answer.text
        wait_for_job(stack.engine, answer.json()["job_id"], "succeeded", timeout=120, watch=stack.worker)

    imported(10, 10)
    before = stack.web.memory_mb()
    imported(1300, 32 * 1024)
    grown = growth(before, stack.web.memory_mb())
    assert max(grown.values()) < MAX_GROWTH_MB, f"peak RSS growth in MB, by process: {grown}"
