"""The API key, checked before anything else reads the request.

Pure ASGI middleware in front of the app: a guarded request without the right `X-API-Key` is
answered 401 from its headers alone, so an unauthenticated client cannot make the service read,
buffer or parse a large body.
"""

from __future__ import annotations

import re
import secrets

from pydantic import SecretStr

from serving.errors import send_problem

HEADER = "X-API-Key"


class ApiKeyGuard:
    """`guarded`: the (method, path) pairs that need the key, a path as the routes write it
    (`/v1/customers/{customer_id}/favourites`: a `{name}` is one path segment); `key` None:
    nothing is guarded."""

    def __init__(self, app, key: SecretStr | None, guarded: set[tuple[str, str]]):
        self.app = app
        self.guarded = [
            (method, re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path)) + "$"))
            for method, path in guarded
        ]
        self.key = key.get_secret_value().encode() if key is not None else None

    def _is_guarded(self, scope) -> bool:
        method, path = scope["method"], scope["path"]
        return any(m == method and pattern.match(path) for m, pattern in self.guarded)

    async def __call__(self, scope, receive, send):
        if (
            self.key is not None
            and scope["type"] == "http"
            and self._is_guarded(scope)
            and not self._authorised(scope)
        ):
            await _refuse(send)
            return
        await self.app(scope, receive, send)

    def _authorised(self, scope) -> bool:
        wanted = HEADER.lower().encode()
        given = [value for name, value in scope["headers"] if name == wanted]
        return len(given) == 1 and secrets.compare_digest(given[0], self.key)


async def _refuse(send) -> None:
    await send_problem(
        send, 401, f"missing or wrong {HEADER} header", [(b"www-authenticate", HEADER.encode())]
    )
