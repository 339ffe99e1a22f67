"""The actors; `dramatiq edcrm.actors` runs them, `periodiq edcrm.actors` schedules the periodic ones.

Those commands import this package in a process with no app: it then builds the worker app
(create_app(web=False), from the environment: REDIS_URL: Redis; unset: in memory), whose init_app
configures the broker, and only then imports the actor modules, so every actor is declared on it.
In the web process, create_app() has configured the job system before it imports this package.
"""

from .. import create_app, jobs

if not jobs.is_configured():
    create_app(web=False)

from . import imports, maintenance, recordings  # after the app configured the broker, on purpose

__all__ = ["imports", "maintenance", "recordings"]
