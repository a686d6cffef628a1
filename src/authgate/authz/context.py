"""An immutable view of one Check request, parsed once."""

from dataclasses import dataclass
from functools import cached_property
from urllib.parse import parse_qs, urlsplit

from authgate.session.cookies import parse_cookie_header


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
    def cookies(self) -> list[tuple[str, str]]:
        return parse_cookie_header(self.headers.get("cookie", ""))

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"

    @property
    def wants_html(self) -> bool:
        """Browsers ask for text/html; API clients and scripts get JSON answers."""
        accept = self.headers.get("accept", "")
        return "text/html" in accept and "application/json" not in accept.split(",")[0]
