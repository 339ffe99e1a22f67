"""`flask --app app edcrm …`: the operator's commands."""

from __future__ import annotations

from flask import Flask

from . import imports, jobs, migrate, users  # noqa: F401  (each module adds its commands to edcrm_cli)
from .group import edcrm_cli


def init_app(app: Flask) -> None:
    app.cli.add_command(edcrm_cli)
    migrate.init_app(app)  # `flask db …`
