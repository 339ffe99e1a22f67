"""Reading the pages: their text, their flash messages and their forms' CSRF token."""

from __future__ import annotations

import re


def text(response) -> str:
    return response.get_data(as_text=True)


def flashes(response) -> list[str]:
    """The error flash messages of a page, whitespace collapsed."""
    return [
        re.sub(r"\s+", " ", m).strip()
        for m in re.findall(r'class="flash flash-error"[^>]*>(.*?)</p>', text(response), re.S)
    ]


def csrf_token(page: str) -> str:
    """The CSRF token of a page's form (the login form's, or the layout's sign-out form's)."""
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)
