"""The body of a playback URL: a recording's audio that a media player streams without the token."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from .base import Answer


class PlaybackUrl(Answer):
    url: str = Field(
        description="An absolute URL that answers GET and HEAD, with `Range` (206), until expires_at, "
        "to anyone holding it: give it to the media player, not an Authorization header."
    )
    expires_at: datetime
