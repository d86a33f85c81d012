"""The API's input bounds: a request body limit (413 beyond it), and validation errors that quote
at most a short prefix of a bad value (a 5 MB user_id is not echoed back)."""

from __future__ import annotations

import contextlib
import json

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 64 * 1024
"""A batch of 1,000 user_ids is about 14 kB of JSON."""
QUOTE_CHARS = 40
"""How much of a bad value an error response quotes."""


class BodyLimit:
    """Refuse a body over `limit` bytes with 413: at once when Content-Length says so, otherwise
    as soon as the bytes read pass it (chunked uploads), never reading the rest."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(send)
            return
        seen = 0
        started = refused = False

        async def limited_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit and not started:
                    # Answer now; the app sees the client gone and its answer goes nowhere.
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(ClientDisconnect):
            await self.app(scope, limited_receive, guarded_send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body larger than {self.limit:,} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def quoted(value: object) -> object:
    """A value as an error may quote it: short strings as they are, anything long cut to a
    prefix with its length."""
    if isinstance(value, str | bytes):
        text = value if isinstance(value, str) else value.decode("utf-8", "replace")
        if len(text) <= QUOTE_CHARS:
            return text
        return f"{text[:QUOTE_CHARS]}... ({len(text):,} characters)"
    if isinstance(value, dict | list | tuple):
        text = json.dumps(value, default=str)
        return value if len(text) <= QUOTE_CHARS else quoted(text)
    return value


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with FastAPI's error list, each quoted input cut short (and no echo of `ctx`)."""
    errors = []
    for error in exc.errors():
        error = {k: v for k, v in error.items() if k in ("type", "loc", "msg", "input")}
        if "input" in error:
            error["input"] = quoted(error["input"])
        errors.append(error)
    return JSONResponse(status_code=422, content={"detail": errors})
