"""Refuse requests not meant for this server, and mark every response ``nosniff``.

A web page on another site can make a browser send requests to ``127.0.0.1`` under its own name
(DNS rebinding): such requests carry that site's name in ``Host``, so any Host other than the
server's own names gets a 421. A POST whose ``Origin`` is another site's gets a 403 (a page may
post a form across sites without reading the answer). Every response carries
``X-Content-Type-Options: nosniff``, so a browser never runs an uploaded file as a script or page.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

NOSNIFF = (b"x-content-type-options", b"nosniff")


def host_name(value: str) -> str:
    """The name in a Host header or an origin's netloc, without port or IPv6 brackets, lowercase."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostGuard:
    """ASGI middleware: Host must be one of ``hosts``; a POST's Origin too (when it has one)."""

    def __init__(self, app, *, hosts: tuple[str, ...]):
        self.app = app
        self.hosts = {host_name(h) for h in hosts}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem = self._problem(scope["method"], headers)
        if problem is not None:
            await _refuse(send, *problem)
            return

        async def send_nosniff(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), NOSNIFF]}
            await send(message)

        await self.app(scope, receive, send_nosniff)

    def _problem(self, method: str, headers: dict[bytes, str]) -> tuple[int, str] | None:
        if host_name(headers.get(b"host", "")) not in self.hosts:
            return 421, "this server answers only to its own address (check the Host header)"
        origin = headers.get(b"origin")
        if method.upper() not in ("GET", "HEAD", "OPTIONS") and origin is not None:
            if host_name(urlsplit(origin).netloc) not in self.hosts:
                return 403, "cross-site request refused (the Origin is another site)"
        return None


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), NOSNIFF]})
    await send({"type": "http.response.body", "body": body})
