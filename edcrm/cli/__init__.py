"""`flask --app app edcrm …`: the operator's commands."""

from __future__ import annotations

from flask import Flask
from flask.cli import AppGroup

edcrm_cli = AppGroup("edcrm", help="edcrm: users, demo data and jobs.")


def init_app(app: Flask) -> None:
    from . import imports, jobs, migrate, users  # noqa: F401  (each module adds its commands to edcrm_cli)

    app.cli.add_command(edcrm_cli)
    migrate.init_app(app)  # `flask db …`
