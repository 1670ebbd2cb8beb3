"""The server's door: the API key, the body size limit, UTF-8, and a count of every answer,
an internal error's 500 included (as JSON, like every other error).

A pure ASGI middleware, so that it runs before FastAPI parses anything: a body over
`serve.max_body_bytes` is refused while it is read (chunked or not), and a body that is not
UTF-8 gets a 400 that says where, instead of a generic parse error.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nmt.config import ServeConfig
from nmt.serve.prometheus import ServerMetrics

ROUTES = ("/", "/health", "/metrics", "/v1/translate", "/v1/model", "/docs", "/openapi.json")
OPEN = ("/health",)  # answered without the API key (load balancers probe it)
LOG = logging.getLogger("uvicorn.error")  # where uvicorn logs what failed in a request


def error_response(
    status: int, error: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": error, **extra}, status_code=status, headers=headers)


class Guard:
    """Refuses what must not reach the app (no key, too large, not UTF-8), gives the app the
    body it read, and counts every answer by route and status."""

    def __init__(self, app: ASGIApp, cfg: ServeConfig, api_key: str | None, metrics: ServerMetrics):
        self.app, self.cfg, self.metrics = app, cfg, metrics
        self.key = None if api_key is None else f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in ROUTES else "other"

        started = False

        async def counted(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.metrics.requests.labels(route, str(message["status"])).inc()
            await send(message)

        refusal = self._refuse_key(scope)
        if refusal is None:
            body, refusal = await self._read_body(scope, receive)
        if refusal is not None:
            await refusal(scope, receive, counted)
            return
        if body is None:  # the client left while sending
            return
        if path == "/v1/translate":  # the API speaks JSON whatever the client declares
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        try:
            await self.app(scope, _replay(body, receive), counted)
        except Exception:  # a bug: logged with its traceback, answered and counted as a 500
            if started:
                raise
            LOG.exception("error while answering %s %s", scope["method"], path)
            failure = error_response(500, "internal error: the server's log says what failed")
            await failure(scope, receive, counted)

    def _refuse_key(self, scope: Scope) -> JSONResponse | None:
        if self.key is None or scope["path"] in OPEN:
            return None
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self.key):
            return None
        return error_response(
            401,
            "missing or wrong API key: send the header `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def _read_body(
        self, scope: Scope, receive: Receive
    ) -> tuple[bytes | None, JSONResponse | None]:
        """The whole body, or the response that refuses it (too large, not UTF-8)."""
        limit = self.cfg.max_body_bytes
        too_large = error_response(
            413, f"the request body is over {limit} bytes (serve.max_body_bytes): split it"
        )
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > limit:
            return None, too_large
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return None, too_large
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, error_response(
                400, f"the body is not valid UTF-8 (byte {exc.start}): send JSON in UTF-8"
            )
        return body, None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the body already read, then waits on the client (for
    its disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
