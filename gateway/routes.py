"""The gateway's plain HTTP routes: the test page's static files and ``POST /function-call``.

``POST /function-call`` keeps the prior art's contract for frontends that still forward calls themselves:
``{id, name, arguments}`` (all strings) → ``200 {"content": "<string>"}`` or ``200 {"error": "<string>"}``,
run on the same queues and workers as the calls the gateway intercepts.
"""

from __future__ import annotations

import json
import mimetypes
from http import HTTPStatus
from pathlib import Path

from gateway.catalog import Catalog
from gateway.dispatcher import REDIS_ERRORS, Dispatcher
from gateway.http import HttpRequest, HttpResponse

STATIC_DIR = Path(__file__).parent / "static"
FUNCTION_CALL_PATH = "/function-call"
HTTP_CALL_PREFIX = "http-"
"""Call ids from HTTP are namespaced so they can never collide with (or read) a provider's call ids."""


def static_file(path: str) -> tuple[bytes, str] | None:
    """Body and content type of a file of the test page, or None. Only files inside ``gateway/static``."""
    name = "index.html" if path == "/" else path.removeprefix("/static/") if path.startswith("/static/") else None
    if not name or "/" in name or name.startswith("."):
        return None
    file = STATIC_DIR / name
    if not file.is_file():
        return None
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type in ("application/javascript", "text/javascript"):
        content_type += "; charset=utf-8"
    return file.read_bytes(), content_type


async def function_call(
    request: HttpRequest, dispatcher: Dispatcher, catalog: Catalog, principal: str = ""
) -> HttpResponse:
    if request.path != FUNCTION_CALL_PATH:
        return HttpResponse.json(HTTPStatus.NOT_FOUND, {"error": "Not found."})
    if request.method != "POST":
        return method_not_allowed()
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return HttpResponse.json(HTTPStatus.BAD_REQUEST, {"error": "Body must be a JSON object."})
    fields = ("id", "name", "arguments")
    if not isinstance(data, dict) or not all(isinstance(data.get(f), str) for f in fields) or not data["name"]:
        return HttpResponse.json(
            HTTPStatus.BAD_REQUEST, {"error": "Fields 'id', 'name' and 'arguments' are required strings."}
        )
    try:
        spec = (await catalog.functions()).get(data["name"])
    except REDIS_ERRORS:
        return HttpResponse.json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "Backend unavailable."})
    if spec is None:
        return HttpResponse.json(HTTPStatus.OK, {"error": f"Unknown function: {data['name']}"})
    result = await dispatcher.call(
        HTTP_CALL_PREFIX + data["id"], data["name"], data["arguments"], spec, "http", principal
    )
    return HttpResponse.json(HTTPStatus.OK, {"content": result.content} if result.ok else {"error": result.error})


def method_not_allowed() -> HttpResponse:
    return HttpResponse.json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "Use POST."}, Allow="POST")
