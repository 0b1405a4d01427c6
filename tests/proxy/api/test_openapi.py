"""The OpenAPI document names exactly the routes served, and every reference in it resolves."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.api.openapi import build
from proxy.api.routes import setup_routes
from tests.support.server import Gateway

Client = TestClient[web.Request, web.Application]


def _served() -> set[tuple[str, str]]:
    app = web.Application()
    setup_routes(app)
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_document_covers_exactly_the_routes() -> None:
    document = build("http://127.0.0.1:8081")
    documented = {
        (method, path)
        for path, operations in document["paths"].items()
        for method in operations
        if method != "parameters"
    }
    assert documented == _served()


def test_every_reference_resolves_and_path_parameters_are_declared() -> None:
    document = build("http://127.0.0.1:8081")
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    for path, item in document["paths"].items():
        declared = {p["name"] for p in item.get("parameters", [])}
        assert declared == set(re.findall(r"\{(\w+)\}", path)), path


async def test_served_with_the_public_url(client: Client, gateway: Gateway) -> None:
    async with client.get("/client/v4/openapi.json") as response:
        document = await response.json()
    assert document["servers"] == [{"url": "http://127.0.0.1:8081"}]
    assert document["openapi"] == "3.0.3"
