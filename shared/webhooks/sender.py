"""HTTP delivery of webhook requests (docs/webhooks.md) with one shared httpx client.

The client follows no redirects (a webhook URL answering 3xx is misconfigured, and the signature
would go to wherever it points) and reuses connections to each receiver. Every request has a total
timeout, so a slow receiver holds one delivery worker for at most that long and never a gateway.
"""

from __future__ import annotations

from typing import Protocol

import httpx

USER_AGENT = "herald-webhooks"


class Sender(Protocol):
    async def start(self) -> None: ...

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> str | None:
        """POST; None on a 2xx answer, else why it failed as "<kind>: <detail>" (kind labels the
        failure counter: `http_<status>`, `timeout`, `network`)."""

    async def close(self) -> None: ...


class HttpSender:
    """See `Sender`."""

    def __init__(self, timeout_s: float, max_connections: int = 100) -> None:
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=20),
                headers={"User-Agent": USER_AGENT},
                trust_env=False,
            )

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> str | None:
        if self._client is None:
            await self.start()
        assert self._client is not None
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            return f"timeout: {type(exc).__name__} after {self.timeout_s:g} s"
        except (httpx.HTTPError, OSError) as exc:
            return f"network: {type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"http_{response.status_code}: {response.text[:200]!r}"

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _conforms(sender: HttpSender) -> Sender:
    return sender  # checked by mypy: HttpSender implements Sender
