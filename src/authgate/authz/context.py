"""An immutable view of one Check request, parsed once."""

from dataclasses import dataclass
from functools import cached_property
from urllib.parse import parse_qs, urlsplit

from authgate.session.cookies import parse_cookie_headers


@dataclass(frozen=True)
class RequestContext:
    route_id: str
    kind: str  # "route" | "internal" | "authenticate"
    method: str
    scheme: str
    host: str  # as sent, lower-cased
    path: str  # path with query, as Envoy normalised it
    headers: dict[str, str]  # lower-case names (Envoy joins repeated headers with ",")
    source_ip: str = ""
    # Every Cookie header as the client sent it, when Envoy encodes raw headers; otherwise
    # empty, and `cookie_bytes` reads Envoy's joined text (invalid UTF-8 already made "!").
    cookie_headers: tuple[bytes, ...] = ()
    # True behind the Envoy authgate generated (context extensions present): its cookie filter
    # can cut authgate's cookies out of headers a Check answer cannot carry (not UTF-8).
    generated_envoy: bool = True
    # The client's certificate (PEM) when downstream_mtls asked for one and it verified.
    client_certificate: str = ""

    @cached_property
    def path_only(self) -> str:
        return self.path.partition("?")[0]

    @cached_property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values and len(values) == 1 else None

    @cached_property
    def cookie_bytes(self) -> tuple[bytes, ...]:
        if self.cookie_headers:
            return self.cookie_headers
        joined = self.headers.get("cookie")
        return () if joined is None else (joined.encode("utf-8", "surrogateescape"),)

    @cached_property
    def cookies(self) -> list[tuple[str, str]]:
        return parse_cookie_headers(self.cookie_bytes)

    def cookie_values(self, name: str) -> list[str]:
        return [value for key, value in self.cookies if key == name]

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"

    @property
    def wants_html(self) -> bool:
        """Browsers ask for text/html; API clients and scripts get JSON answers."""
        accept = self.headers.get("accept", "")
        return "text/html" in accept and "application/json" not in accept.split(",")[0]
