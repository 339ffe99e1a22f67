"""The tus settings: their defaults and the values refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from edcrm.config import MIB, ConfigError, from_env


def settings(**env: str) -> dict:
    return from_env(env, Path("/tmp/edcrm-instance"), overrides={"SECRET_KEY": "x"})


def test_the_defaults():
    config = settings()
    assert config["TUS_UPLOAD_TTL_HOURS"] == 24
    assert config["TUS_PART_BYTES"] == 8 * MIB
    assert config["CORS_ORIGINS"] == ()


def test_the_values_set():
    config = settings(
        TUS_UPLOAD_TTL_HOURS="6",
        TUS_PART_BYTES=str(16 * MIB),
        CORS_ORIGINS="https://App.example.com/, http://localhost:3000",
    )
    assert (config["TUS_UPLOAD_TTL_HOURS"], config["TUS_PART_BYTES"]) == (6, 16 * MIB)
    assert config["CORS_ORIGINS"] == ("https://app.example.com", "http://localhost:3000")


@pytest.mark.parametrize(
    ("name", "value"),
    [("TUS_PART_BYTES", str(5 * MIB - 1)), ("TUS_UPLOAD_TTL_HOURS", "0"), ("CORS_ORIGINS", "example.com")],
)
def test_a_value_that_cannot_be_stops_the_start(name, value):
    with pytest.raises(ConfigError, match=name):
        settings(**{name: value})
