"""What the API and the page share about a CSV upload: the request size limit and the telecaller ids of
a form. The HTTP status of each reason an upload is rejected is edcrm.routes.errors' to say."""

from __future__ import annotations

from collections.abc import Iterable

from flask import current_app, request

from ..forms import record_id

#: What may stand around an id in a form value (only these: the document's pattern names them).
BLANKS = " \t\r\n"

#: Room for the multipart framing and the other fields, on top of the file itself.
MULTIPART_OVERHEAD = 64 * 1024


def limit_request_size() -> None:
    """Refuse (413) a request body much larger than MAX_CSV_BYTES before any of it is parsed.

    Werkzeug spools file parts to temporary files as it parses, so an upload is never in memory; this
    keeps an oversized one from filling the disk too. The exact limit is counted on the file itself.
    """
    request.max_content_length = current_app.config["MAX_CSV_BYTES"] + MULTIPART_OVERHEAD


def parse_telecaller_ids(values: Iterable[str]) -> list[int]:
    """The ids of repeated fields and/or comma-separated values, in order, without repeats.

    Each value is one id or several separated by commas, with blanks (spaces, tabs, line breaks) around
    them: the form the OpenAPI document gives (edcrm.routes.api.schemas.imports.TELECALLER_IDS_PATTERN).
    ValueError names the pieces that are not ids (ASCII digits within 1..MAX_ID, no leading zero), an
    empty one included.
    """
    ids, bad = [], []
    for value in values:
        for piece in value.split(","):
            piece = piece.strip(BLANKS)
            try:
                ids.append(record_id(piece))
            except ValueError:
                bad.append(piece)
    if bad:
        shown = ", ".join(repr(value[:20]) for value in bad[:10])
        raise ValueError(f"must be telecaller ids (whole numbers), not {shown}")
    return list(dict.fromkeys(ids))
