"""Lead imports: a CSV of leads becomes leads of a branch, shared round-robin between telecallers.

- upload: starting an import (checks, streaming the file to storage, queuing the job);
- reader, headers, validation, distribution: the pieces of the pipeline;
- pipeline: the job itself (`run_import`), streamed, batched and exactly once;
- report: the error report of the rejected rows.
"""
