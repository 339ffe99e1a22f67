"""The pages: a login form, a session cookie, CSRF-protected forms."""

from __future__ import annotations

from flask import Blueprint, current_app
from flask_login import current_user
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from ...models import Role

bp = Blueprint("web", __name__)

#: The navigation: (path, label, roles that see it; empty: everyone). Paths are the contract's; a link
#: shows once a feature serves its path, so features need not edit the layout.
NAV_LINKS: list[tuple[str, str, tuple[Role, ...]]] = [
    ("/", "Home", ()),
    ("/imports", "Imports", (Role.ADMIN,)),
    ("/jobs", "Jobs", (Role.ADMIN,)),
]


def page_exists(path: str) -> bool:
    """Does the app answer GET path (a route is registered for it)?"""
    adapter = current_app.url_map.bind("localhost")
    try:
        adapter.match(path, method="GET")
    except RequestRedirect:
        return True  # e.g. the route wants a trailing slash
    except HTTPException:
        return False
    return True


def links_for(user, links=None) -> list[dict[str, str]]:
    """The links of links (default: the navigation) that user may follow and the app serves."""
    return [
        {"path": path, "label": label}
        for path, label, roles in (NAV_LINKS if links is None else links)
        if (not roles or user.role in roles) and page_exists(path)
    ]


@bp.app_context_processor
def navigation() -> dict:
    # A function, so that a page that shows no user (a 5xx page, the database may be down) looks up nothing.
    return {"nav_links": lambda: links_for(current_user)}


from . import home, imports, jobs, recordings, session  # noqa: E402, F401  (each module adds its pages to bp)
