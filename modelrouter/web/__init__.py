"""The HTTP front (aiohttp): validation, auth, request ids, JSON and SSE writing."""

from modelrouter.web.app import create_app

__all__ = ["create_app"]
