"""The coordinator's REST API (aiohttp), its models and its OpenAPI document."""

from coordinator.api._app import build_app
from coordinator.api._openapi import openapi_document

__all__ = ["build_app", "openapi_document"]
