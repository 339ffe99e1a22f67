"""Blueprints: thin handlers that parse, authorise, call domain code and answer."""

from __future__ import annotations

from flask import Flask

from ..auth import bearer_challenge
from . import api, bodies, converters, cors, errors, health, limits, metrics, openapi, tus, web


def init_app(app: Flask) -> None:
    converters.init_app(app)  # first: a rule takes its converters from the map when it is added
    limits.init_app(app)
    errors.init_app(app)
    bodies.init_app(app)
    cors.init_app(app)
    app.after_request(bearer_challenge)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(tus.bp)
    app.register_blueprint(web.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(metrics.bp)
