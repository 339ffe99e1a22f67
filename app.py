"""The WSGI entry point: `flask --app app …`, `gunicorn app:app`."""

from edcrm import create_app

app = create_app()
