"""Names the replica that answered, in every response's `X-Viraliency-Replica` header.

Behind a load balancer this tells a client (and a test) which replica served it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-viraliency-replica"


class NameReplica:
    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.header = (HEADER, name.encode("latin-1", "replace"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_named)
