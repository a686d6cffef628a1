"""Every HTTP request to the identity provider, counted and timed by wrapping the transports
of the client that sends it (the plain client and authlib's token client), and named by a
bounded endpoint word.

The client is built as usual first and its transports wrapped afterwards: passing
`transport=` instead would make httpx ignore `verify`, `cert` and the proxy environment
(HTTPS_PROXY), which a deployment may rely on to reach its IdP."""

from time import perf_counter
from typing import TypeVar

import httpx

from authgate.ops.metrics import IDP_REQUESTS, IDP_SECONDS

ClientT = TypeVar("ClientT", bound=httpx.AsyncClient)


def endpoint_name(url: httpx.URL) -> str:
    """discovery | jwks | token | userinfo | other: the label, never the URL (unbounded)."""
    path = url.path.lower()
    if path.endswith("/.well-known/openid-configuration"):
        return "discovery"
    last = path.rstrip("/").rpartition("/")[2]
    if "token" in last:
        return "token"
    if "jwks" in path or "certs" in last or last == "keys":
        return "jwks"
    if "userinfo" in path or last in ("user", "me", "emails"):
        return "userinfo"
    return "other"


def measured(client: ClientT) -> ClientT:
    """`client`, its requests to the IdP counted and timed (httpx 0.28's transport slots)."""
    client._transport = MeasuredTransport(client._transport)
    client._mounts = {
        pattern: None if transport is None else MeasuredTransport(transport)
        for pattern, transport in client._mounts.items()
    }
    return client


class MeasuredTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = endpoint_name(request.url)
        started = perf_counter()
        try:
            response = await self._inner.handle_async_request(request)
        except Exception:
            IDP_SECONDS.labels(endpoint).observe(perf_counter() - started)
            IDP_REQUESTS.labels(endpoint, "error").inc()
            raise
        IDP_SECONDS.labels(endpoint).observe(perf_counter() - started)
        status = response.status_code
        outcome = "success" if status < 400 else f"http_{status // 100}xx"
        IDP_REQUESTS.labels(endpoint, outcome).inc()
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
