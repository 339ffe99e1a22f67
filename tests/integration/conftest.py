"""Fixtures of the end-to-end tests."""

from tests.support.s3_server import s3_server  # noqa: F401  (moto's S3 server over HTTP, a fixture)
from tests.support.stack import stack  # noqa: F401  (the production processes on real services, a fixture)
