"""Admin API (aiohttp) in Cloudflare API v4 shapes: ``create_app(ApiDeps(...))``."""

from proxy.api.app import create_app
from proxy.api.state import ApiDeps, NodeInfo

__all__ = ["ApiDeps", "NodeInfo", "create_app"]
