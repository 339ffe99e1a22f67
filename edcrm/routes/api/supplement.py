"""What the OpenAPI document says per operation that spectree cannot: response headers, links between
operations, and bodies that are not JSON (merged into the generated operations by
edcrm.routes.api.document)."""

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
}
