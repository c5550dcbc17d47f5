"""jetloom over HTTP: Dapr's workflow API (``dapr_api``) and its OpenAPI document (``openapi``),
served by ``jetloom serve-http``."""

from engine.http.dapr_api import DaprError, build_app, dapr_state, dapr_status, serve_http
from engine.http.openapi import OPENAPI

__all__ = ["OPENAPI", "DaprError", "build_app", "dapr_state", "dapr_status", "serve_http"]
