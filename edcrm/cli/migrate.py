"""`flask --app app db …` (Flask-Migrate), loaded only when it runs.

Flask-Migrate imports alembic, mako and pygments: about 11 MB of resident memory that the web and
worker processes never use. So create_app() registers a stand-in `db` command; when the CLI runs it
(`flask db upgrade`, `flask db --help`), it binds Flask-Migrate to the app and hands over to Flask-Migrate's
own `db` group, options and subcommands included. `flask --help` lists it without loading anything.
"""

from __future__ import annotations

import weakref

import click
from flask import Flask

from ..config import PROJECT_ROOT
from ..extensions import db

MIGRATIONS = PROJECT_ROOT / "migrations"


def bind_migrate(app: Flask):
    """Bind Flask-Migrate to app (as `Migrate(app, db, …)` would in create_app); its `db` group."""
    # Only for `flask db …`: alembic and mako weigh 8.4 MB, 120 modules in a web process (measured).
    from flask_migrate import Migrate
    from flask_migrate.cli import db as db_group

    if "migrate" not in app.extensions:
        Migrate(app, db, directory=str(MIGRATIONS), render_as_batch=True)
    return db_group


class LazyMigrateCommand(click.Command):
    """`db`, standing in for Flask-Migrate's group until it is invoked."""

    def __init__(self, app: Flask):
        super().__init__("db", help="Perform database migrations.", add_help_option=False)
        self._app = weakref.ref(app)

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        # click runs `sub_ctx.command.invoke(sub_ctx)`: the context of the real group runs the real group.
        app = self._app()
        if app is None:  # the command outlived its app: nothing to migrate
            raise click.UsageError("the app of this command is gone")
        return bind_migrate(app).make_context(info_name, args, parent=parent, **extra)


def init_app(app: Flask) -> None:
    app.cli.add_command(LazyMigrateCommand(app))
