"""Pomerium's `rewrite_response_headers` on Envoy: a Lua filter that does nothing by default,
given per route the code that replaces a header value's prefix (Envoy's own header options
can only set or add a value, not rewrite part of one)."""

from collections.abc import Sequence

import betterproto2
from envoy_data_plane.envoy.config.core.v3 import DataSource
from envoy_data_plane.envoy.extensions.filters.http.lua.v3 import Lua, LuaPerRoute
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpFilter,
)
from envoy_data_plane.google.protobuf import Any as AnyProto

from authgate.config.pomerium_options import RewriteResponseHeader

RESPONSE_REWRITE_FILTER = "authgate.response_rewrite"
_LUA_FILTER = "envoy.filters.http.lua"


def _lua_string(text: str) -> str:
    """A Lua string literal (the schema refuses line breaks and NUL in these values)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rewrite_lua(rewrites: Sequence[RewriteResponseHeader]) -> str:
    lines = ["function envoy_on_response(handle)", "  local h = handle:headers()"]
    for rw in rewrites:
        name, prefix, value = (_lua_string(x) for x in (rw.header.lower(), rw.prefix, rw.value))
        lines += [
            f"  do local v = h:get({name})",
            f"    local p = {prefix}",
            "    if v ~= nil and v:sub(1, #p) == p then",
            f"      h:replace({name}, {value} .. v:sub(#p + 1)) end end",
        ]
    lines.append("end")
    return "\n".join(lines) + "\n"


def response_rewrite_filter() -> HttpFilter:
    """In the chain only when some route rewrites; silent on every other route."""
    lua = Lua(default_source_code=DataSource(inline_string="-- per route only\n"))
    return HttpFilter(name=RESPONSE_REWRITE_FILTER, typed_config=AnyProto.pack(lua))


def response_rewrites(
    rewrites: Sequence[RewriteResponseHeader],
) -> dict[str, AnyProto]:
    """The route's typed_per_filter_config entry (none when the route rewrites nothing)."""
    if not rewrites:
        return {}
    per_route: betterproto2.Message = LuaPerRoute(
        source_code=DataSource(inline_string=rewrite_lua(rewrites))
    )
    return {RESPONSE_REWRITE_FILTER: AnyProto.pack(per_route)}
