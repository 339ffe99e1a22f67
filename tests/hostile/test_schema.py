"""Schemathesis against the OpenAPI document the real server serves: the document says what the server does.

`schemathesis run` reads /api/openapi.json from the embedded gunicorn and sends every operation, as an
admin and as a telecaller (their tokens, so each role's answers are checked), the cases of its coverage,
fuzzing and stateful phases (links from the document and the ones it infers). Its checks are on (two
stateful heuristics aside, see CONFIG): no 5xx; status codes, content types, headers and bodies as
documented; schema-violating data refused and schema-valid data accepted; 405 and `Allow` for the methods
a path lacks; 401 without the token. The seed is fixed, examples are bounded and nothing is cached across
runs, so a run repeats.

Where the server refuses what the schema allows for a reason the schema cannot say (an id that is no
telecaller of the branch, a total_size over MAX_RECORDING_BYTES, bytes that are no CSV), the operation's
`positive_data_acceptance` takes that answer (see CONFIG). DELETE /api/auth/token revokes the token it is
sent with, so it runs on its own, with a token of its own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: The virtualenv's scripts, beside the interpreter running pytest.
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
SEED = 20261201
#: Teaches schemathesis the media types it does not know (tus's application/offset+octet-stream).
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
#: Cases per operation in the fuzzing phase, and scenarios in the stateful one.
MAX_EXAMPLES = 15

# Statuses the checks take besides their defaults, and why:
# - refusing schema-violating data with 413 (a form of over 1,000 parts), 414/431 (too long), 415 or 429
#   is refusing it;
# - the business rules below are outside what a schema says: the operation may answer them to valid data;
# - use_after_free and ensure_resource_availability are off: a DELETEd upload is `cancelled`, not gone
#   (the contract: GET shows why), and what a Location names has sub-resources that exist only later
#   (a call log's recording, once one is uploaded); the stateful phase still checks every answer.
CONFIG = """
[cache]
enabled = false

[checks]
use_after_free.enabled = false
# tus: a request without Tus-Resumable is refused 412 (with Tus-Version), as the protocol says.
missing_required_header.expected-statuses = ["400", "401", "403", "406", "412", "415", "422"]
ensure_resource_availability.enabled = false
negative_data_rejection.expected-statuses = [
    "400", "401", "403", "404", "405", "406", "409", "412", "413", "414", "415", "422", "428", "429", "431",
]

[[operations]]
include-operation-id = "createImport"  # invalid_telecallers, empty_file (422); not_csv (415)
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "415", "422", "429"]

[[operations]]
include-operation-id = "createRecordingUpload"  # total_size over MAX_RECORDING_BYTES (413)
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "413", "429"]

[[operations]]
include-operation-id = "putRecordingChunk"  # an index past the upload's chunks, an empty chunk (422)
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]

[[operations]]
include-operation-id = "completeRecordingUpload"  # chunks that do not add up to total_size (422)
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]

[[operations]]
include-operation-id = "uploadRecording"  # an empty file (422)
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]

[[operations]]
include-operation-id = "downloadRecording"
checks.ensure_resource_availability.enabled = false

[[operations]]
include-operation-id = "getRecordingUpload"
checks.use_after_free.enabled = false

# tus (edcrm.routes.tus): headers whose rules a schema cannot say (a call_log_id in Upload-Metadata that is
# the telecaller's, an offset where the upload is, bytes that are audio, partials that are finished).
[[operations]]
include-operation-id = "createTusUpload"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "400", "401", "403", "404", "409", "412", "413", "415", "422", "423", "429", "460",
]

[[operations]]
include-operation-id = "patchTusUpload"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "400", "401", "403", "404", "409", "410", "412", "413", "415", "422", "423", "429", "460",
]

[[operations]]
include-operation-id = "overrideTusUpload"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "400", "401", "403", "404", "409", "410", "412", "413", "415", "422", "423", "429", "460",
]

[[operations]]
include-operation-id = "deleteTusUpload"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "401", "403", "404", "409", "410", "412", "423", "429",
]

[[operations]]
include-operation-id = "headTusUpload"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "410", "412", "429"]
"""


def run_schemathesis(server, token: str, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """`schemathesis run` of the served document with token; in workdir, which gets its files."""
    config = workdir / "schemathesis.toml"
    config.write_text(f'hooks = "{HOOKS}"\n' + CONFIG)
    argv = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{server.base}/api/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        *args,
    ]
    return subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=240)


def assert_passed(result: subprocess.CompletedProcess) -> None:
    report = result.stdout + result.stderr
    failures = report.find("FAILURES")
    assert result.returncode == 0, report[failures:] if failures >= 0 else report[-20000:]
    assert " passed" in report and "Tested: " in report


@pytest.mark.parametrize("who", ["admin", "telecaller"])
def test_every_operation_answers_as_the_document_says(server, tmp_path, who):
    token = (server.admin if who == "admin" else server.telecaller)["token"]
    assert_passed(run_schemathesis(server, token, tmp_path, "--exclude-operation-id", "revokeToken"))


def test_signing_out_answers_as_the_document_says(server, tmp_path):
    token = server.flask("edcrm", "create-token", server.telecallers[1]["email"]).stdout.strip()
    only = ("--include-operation-id", "revokeToken", "--phases", "coverage,fuzzing")  # no link to follow
    assert_passed(run_schemathesis(server, token, tmp_path, *only))
