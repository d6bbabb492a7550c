"""Shared fixtures: the stand-in provider (tests/standin.py) and the gateway wired to it."""

pytest_plugins = ["tests.standin", "tests.gateway"]
