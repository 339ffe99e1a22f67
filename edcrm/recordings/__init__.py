"""Call recordings: upload sessions (uploads.py) and why they are refused (errors.py), audio detection
(audio.py), finalizing an upload into a stored Recording (finalize.py, run by the recordings actors),
and the hourly housekeeping of sessions (pruning.py)."""
