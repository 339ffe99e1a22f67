"""Lead imports: a CSV of leads becomes leads of a branch, shared round-robin between telecallers.

- upload: starting an import (checks, streaming the file to storage, queuing the job);
- lifecycle: the job itself (`run_import`): its states from queued to completed, cancelled or failed,
  the first pass over the file (scan), and the batches of the second, streamed and exactly once;
- batch_reader: the second pass's reading thread, which parses and validates rows into batches;
- batch_writer: one batch's transaction (locks, duplicates, round-robin, counters and checkpoint);
- table_writers: how rows reach the tables, one writer for PostgreSQL and one for SQLite;
- lookup: which of a batch's phones are already leads of the branch;
- encoding, reader, headers, validation, distribution: the file's text, its records, its columns, a
  row's values, the round-robin rotation;
- report: the error report of the rejected rows.
"""
