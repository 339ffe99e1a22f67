"""The `flask edcrm …` command group, which each command module of edcrm.cli adds its commands to."""

from __future__ import annotations

from flask.cli import AppGroup

edcrm_cli = AppGroup("edcrm", help="edcrm: users, demo data and jobs.")
