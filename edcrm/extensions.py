"""Flask extensions, created unbound here and bound to an app in create_app().

Flask-Migrate is not among them: it imports alembic and mako (about 11 MB of a process's memory), which
only `flask db …` needs; edcrm.cli.migrate binds it when that command runs. And `csrf` (Flask-WTF with
WTForms, 1.2 MB) is made on first use, by the pages and the API: workers never import it; so is `limiter`
(Flask-Limiter with limits, 4 MB), which keeps the counts of failed sign-ins (edcrm.login_limit). Neither
connects anywhere when it is made or bound: Flask-Limiter's Redis storage connects on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, Table, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase

# Named constraints, so Alembic can alter them on SQLite (batch mode) and PostgreSQL alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    if TYPE_CHECKING:
        # Every model maps a table (none a join or a select), so its __table__ has a Table's methods.
        __table__: ClassVar[Table]


db = SQLAlchemy(model_class=Base)
# The models' base class. Flask-SQLAlchemy types db.Model as a variable, which mypy refuses as a base;
# db.Model subclasses Base and adds nothing the models' code uses, so Base is what mypy checks them as.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model
login_manager = LoginManager()


def __getattr__(name: str):
    if name == "csrf":
        from flask_wtf import CSRFProtect  # on first use: workers never load Flask-WTF (see above)

        globals()["csrf"] = protect = CSRFProtect()
        return protect
    if name == "limiter":
        # On first use: workers never load Flask-Limiter (see above).
        from flask_limiter import Limiter
        from flask_limiter.util import get_remote_address

        # No default limits: edcrm.login_limit counts what it limits itself (failed sign-ins only).
        globals()["limiter"] = made = Limiter(get_remote_address)
        return made
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@event.listens_for(Engine, "connect")
def _tune_sqlite(dbapi_connection, _record) -> None:
    """SQLite: enforce foreign keys, and let web and worker threads write without 'database is locked'."""
    if type(dbapi_connection).__module__ != "sqlite3":
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
