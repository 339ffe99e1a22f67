"""edcrm: lead imports, call recordings and an Oban-like job system for an education CRM."""

from __future__ import annotations

import os
from collections.abc import Mapping

from flask import Flask

from . import config as settings
from .memory import tune_malloc

tune_malloc()  # before any thread starts: see edcrm.memory


def create_app(config: Mapping | None = None, *, web: bool = True) -> Flask:
    """Build the app from the environment; `config` overrides (tests). Nothing connects here.

    web=False builds the app a `dramatiq` worker or the scheduler runs jobs in: the database, the job
    system and the storage, without the pages, the API, the CLI and their imports (a few MB a process).
    """
    instance_path = settings.instance_path(os.environ, config)
    instance_path.mkdir(parents=True, exist_ok=True)
    app = Flask(__name__, instance_path=str(instance_path))
    app.config.from_mapping(settings.from_env(os.environ, instance_path, overrides=config or {}))

    # Not at the top: the gunicorn master imports edcrm (for its worker class) and never builds an app,
    # and these weigh 33 MB there (388 modules, measured); the web's, below, 13 MB in a worker.
    from . import jobs, spool
    from .extensions import db

    if web:
        from . import auth, bodytimeout, cli, login_limit, metrics, routes, security_headers
        from .extensions import csrf

        metrics.init_app(app)  # first: its timer starts before any other before_request function
    db.init_app(app)
    if web:
        csrf.init_app(app)
        auth.init_app(app)
        login_limit.init_app(app)
        security_headers.init_app(app)
        routes.init_app(app)
        cli.init_app(app)
        bodytimeout.init_app(app)
    jobs.init_app(app)  # the app's broker, before any actor module is imported
    spool.sweep()  # the spools of processes killed since the last start

    # Last, not at the top: every actor is declared on the broker jobs.init_app has just configured.
    from . import actors  # noqa: F401  (the first app declares the actors; init_app moves them later)

    return app
