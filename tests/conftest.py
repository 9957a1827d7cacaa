"""Fixtures shared by every test: real servers on free ports with temporary
state, one of each per session (see tests/fixtures/)."""

pytest_plugins = [
    "fixtures.nats",
    "fixtures.postgres",
    "fixtures.s3",
    "fixtures.platform",
    "fixtures.registry",
    "fixtures.otlp",
]
