"""What the OpenAPI document says per operation that spectree cannot: response headers, links between
operations, bodies that are not JSON (merged into the generated operations by
edcrm.routes.api.document), and the operations spectree does not generate at all (tus's HEAD)."""

from __future__ import annotations

from typing import Any

from .schemas.base import SHA256

RETRY_AFTER = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
BINARY = {"type": "string", "format": "binary"}
TEXT = {"schema": {"type": "string"}}


def _location(description: str | None = None) -> dict[str, Any]:
    header: dict[str, Any] = {"schema": {"type": "string"}}
    if description:
        header = {"description": description, **header}
    return {"Location": header}


def _links(**links: tuple[str, dict[str, str]]) -> dict[str, Any]:
    return {
        name: {"operationId": operation_id, "parameters": parameters}
        for name, (operation_id, parameters) in links.items()
    }


def _each_upload_operation(expression: str) -> dict[str, Any]:
    parameters = {"upload_id": expression}
    return _links(
        getRecordingUpload=("getRecordingUpload", parameters),
        putRecordingChunk=("putRecordingChunk", parameters),
        completeRecordingUpload=("completeRecordingUpload", parameters),
        deleteRecordingUpload=("deleteRecordingUpload", parameters),
    )


# -- tus 1.0 (edcrm.routes.tus): its headers, in requests and answers -----------------------------------

_TUS_RESUMABLE = {
    "name": "Tus-Resumable",
    "in": "header",
    "required": True,
    "description": "The tus version the client speaks: 1.0.0 (else 412 with `Tus-Version`).",
    "schema": {"type": "string", "enum": ["1.0.0"]},
}
_BYTES_HEADER = {"type": "string", "pattern": "^[0-9]{1,19}$"}


def _header(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _answer_header(description: str, example: str | None = None) -> dict[str, Any]:
    header: dict[str, Any] = {"description": description, "schema": {"type": "string"}}
    if example is not None:
        header["example"] = example
    return header


_TUS_ANSWER = {"Tus-Resumable": _answer_header("The tus version of the answer.", "1.0.0")}
_EXPIRES = _answer_header(
    "When the upload expires without another PATCH (RFC 7231 date).", "Wed, 02 Dec 2026 22:00:00 GMT"
)
_OFFSET = _answer_header("The bytes the upload holds, committed.", "8388608")
_CHECKSUM = _header(
    "Upload-Checksum",
    "`ALGORITHM BASE64DIGEST` of this request's body (sha1, md5, sha256, crc32): a body that does not match "
    "is 460 and nothing of it is kept.",
)
_OFFSET_OCTETS = {"content": {"application/offset+octet-stream": {"schema": BINARY}}}
_TUS_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

#: Operations spectree leaves out (it generates no HEAD), by path and method: completed by
#: edcrm.routes.api.document as the generated ones are.
EXTRA_OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "/api/recordings/tus/{upload_id}": {
        "head": {
            "summary": "A tus upload's offset, length, metadata and expiry, to resume it (no body)",
            "operationId": "headTusUpload",
            "tags": ["recordings"],
            "parameters": [
                {"name": "upload_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "The upload, in headers; `Cache-Control: no-store`.",
                    "headers": {
                        **_TUS_ANSWER,
                        "Upload-Offset": _OFFSET,
                        "Upload-Length": _answer_header("The upload's length, once known.", "1048576"),
                        "Upload-Defer-Length": _answer_header("1 while the length is not known yet.", "1"),
                        "Upload-Metadata": _answer_header("The Upload-Metadata it was created with."),
                        "Upload-Concat": _answer_header("`partial`, or `final;URL URL...`."),
                        "Upload-Expires": _EXPIRES,
                        "Cache-Control": _answer_header("Never cached.", "no-store"),
                    },
                },
                "401": {
                    "description": "No token, or an unknown or revoked one (`unauthorized`).",
                    **_TUS_ERROR,
                },
                "403": {"description": "Not a telecaller's token (`forbidden`).", **_TUS_ERROR},
                "404": {"description": "No such upload of yours (`not_found`).", **_TUS_ERROR},
                "410": {
                    "description": "The upload expired or was terminated (`upload_expired`).",
                    **_TUS_ERROR,
                },
                "412": {
                    "description": "No `Tus-Resumable: 1.0.0` (`unsupported_tus_version`).",
                    **_TUS_ERROR,
                },
            },
        }
    }
}

_TUS_PATCH_HEADERS = [
    _header("Upload-Offset", "Where this body starts: the upload's offset (else 409).", _BYTES_HEADER),
    _header("Upload-Length", "The length of an upload created with `Upload-Defer-Length: 1`.", _BYTES_HEADER),
    _CHECKSUM,
]
_TUS_PATCHED = {"headers": {**_TUS_ANSWER, "Upload-Offset": _OFFSET, "Upload-Expires": _EXPIRES}}
_CHECKSUM_MISMATCH = {
    "460": {
        "description": "The body does not match `Upload-Checksum` (`checksum_mismatch`): nothing is kept.",
        **_TUS_ERROR,
    }
}

_GET_JOB = {"getJob": ("getJob", {"job_id": "$response.body#/job_id"})}

#: Per operation, what spectree cannot say: merged into the generated operation.
SUPPLEMENT: dict[str, dict[str, Any]] = {
    "issueToken": {"responses": {"429": {"headers": RETRY_AFTER}}},
    "createImport": {
        "responses": {
            "202": {
                "headers": _location("The import's URL."),
                "links": _links(
                    getImport=("getImport", {"import_id": "$response.body#/id"}),
                    getImportErrors=("getImportErrors", {"import_id": "$response.body#/id"}),
                    **_GET_JOB,
                ),
            }
        }
    },
    "listImports": {
        "responses": {
            "200": {"links": _links(getImport=("getImport", {"import_id": "$response.body#/items/0/id"}))}
        }
    },
    "getImportErrors": {
        "responses": {
            "200": {
                "headers": {
                    "Content-Disposition": {
                        "schema": {"type": "string"},
                        "example": 'attachment; filename="import-7-errors.csv"',
                    }
                },
                "content": {"text/csv": TEXT},
            }
        }
    },
    "listLeads": {
        "responses": {"200": {"links": _links(nextPage=("listLeads", {"cursor": "$response.body#/next"}))}}
    },
    "createCallLog": {
        "responses": {
            "201": {
                "headers": _location("The call log's URL."),
                "links": _links(
                    getCallLog=("getCallLog", {"call_log_id": "$response.body#/id"}),
                    uploadRecording=("uploadRecording", {"call_log_id": "$response.body#/id"}),
                ),
            }
        }
    },
    "createRecordingUpload": {
        "responses": {
            "201": {
                "headers": _location("The upload's URL."),
                "links": _each_upload_operation("$response.body#/upload_id"),
            }
        }
    },
    "putRecordingChunk": {
        "parameters": [
            {
                "name": "X-Chunk-SHA256",
                "in": "header",
                "required": False,
                "description": "The chunk's SHA-256: a chunk that does not match is refused and "
                "nothing is kept.",
                "schema": {"type": "string", "pattern": SHA256},
            }
        ],
        "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": BINARY}}},
    },
    "completeRecordingUpload": {"responses": {"202": {"links": _links(**_GET_JOB)}}},
    "uploadRecording": {"responses": {"202": {"links": _links(**_GET_JOB)}}},
    "downloadRecording": {
        "responses": {
            "200": {"content": {"audio/*": {"schema": BINARY}}},
            "302": {"headers": _location()},
        }
    },
    "listJobs": {
        "responses": {
            "200": {
                "links": _links(
                    getJob=("getJob", {"job_id": "$response.body#/items/0/id"}),
                    retryJob=("retryJob", {"job_id": "$response.body#/items/0/id"}),
                    cancelJob=("cancelJob", {"job_id": "$response.body#/items/0/id"}),
                    nextPage=("listJobs", {"cursor": "$response.body#/next"}),
                )
            }
        }
    },
    "retryFailedJobs": {
        "requestBody": {
            "required": False,
            "description": "Optional, framed by Content-Length or sent chunked (`Transfer-Encoding: "
            "chunked`) alike.",
        }
    },
    "metrics": {
        "responses": {
            "200": {
                "headers": {"Cache-Control": {"schema": {"type": "string"}, "example": "no-store"}},
                "content": {
                    "text/plain; version=0.0.4": {
                        "schema": {"type": "string"},
                        "example": 'edcrm_jobs{queue="default",state="failed"} 0.0\n',
                    }
                },
            }
        }
    },
    "apiDocs": {"responses": {"200": {"content": {"text/html": TEXT}}}},
    "createTusUpload": {
        "parameters": [
            _header(
                "Upload-Length", "The recording's length in bytes (at most `Tus-Max-Size`).", _BYTES_HEADER
            ),
            _header(
                "Upload-Defer-Length",
                "1: the length comes with a later PATCH.",
                {"type": "string", "enum": ["1"]},
            ),
            _header(
                "Upload-Metadata",
                "Comma-separated `key base64value` pairs: `call_log_id` (required but for a partial upload), "
                "`filename`, `filetype`, `sha256` (hex of the whole file).",
            ),
            _header(
                "Upload-Concat", "`partial`, or `final;URL URL...` naming finished partial uploads in order."
            ),
            _CHECKSUM,
        ],
        "requestBody": {
            "required": False,
            "description": "The first bytes (creation-with-upload), as a PATCH at offset 0 would send them.",
            **_OFFSET_OCTETS,
        },
        "responses": {
            "201": {
                "headers": {
                    **_TUS_ANSWER,
                    "Location": _answer_header("The upload's URL, absolute."),
                    "Upload-Expires": _EXPIRES,
                    "Upload-Offset": _answer_header("With a body: the bytes it holds."),
                }
            },
            **_CHECKSUM_MISMATCH,
        },
    },
    "patchTusUpload": {
        "parameters": _TUS_PATCH_HEADERS,
        "requestBody": {"required": True, **_OFFSET_OCTETS},
        "responses": {"204": _TUS_PATCHED, **_CHECKSUM_MISMATCH},
    },
    "deleteTusUpload": {"responses": {"204": {"headers": _TUS_ANSWER}}},
    "overrideTusUpload": {
        "parameters": [
            _header(
                "X-HTTP-Method-Override",
                "The method this POST stands for.",
                {"type": "string", "enum": ["PATCH", "DELETE", "HEAD"]},
            ),
            *_TUS_PATCH_HEADERS,
        ],
        "requestBody": {
            "required": False,
            "description": "As PATCH: the bytes from Upload-Offset on.",
            **_OFFSET_OCTETS,
        },
        "responses": {"204": _TUS_PATCHED, **_CHECKSUM_MISMATCH},
    },
}

#: The tus operations: each takes Tus-Resumable (added to their parameters by edcrm.routes.api.document).
TUS_OPERATIONS = frozenset(
    {"createTusUpload", "headTusUpload", "patchTusUpload", "deleteTusUpload", "overrideTusUpload"}
)
TUS_RESUMABLE = _TUS_RESUMABLE
