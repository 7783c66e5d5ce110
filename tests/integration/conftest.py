"""Fixtures the server's tests share with the clients' (tests/integration/test_clients.py)."""

from tests.integration.test_server import other_image_canary, served

__all__ = ["other_image_canary", "served"]
