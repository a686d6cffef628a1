"""Every HTTP request to the identity provider, counted and timed by one httpx transport
(both the plain client and authlib's token client use it), named by a bounded endpoint word."""

from time import perf_counter

import httpx

from authgate.ops.metrics import IDP_REQUESTS, IDP_SECONDS


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


class MeasuredTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport()

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
