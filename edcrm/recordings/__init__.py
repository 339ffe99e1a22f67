"""Call recordings: upload sessions (uploads.py), audio detection (audio.py) and finalizing an upload
into a stored Recording (finalize.py, run by the recordings actors)."""
