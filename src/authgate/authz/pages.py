"""The answers authgate gives itself: redirects, small HTML pages, JSON errors."""

import html
import json

from authgate.authz.context import RequestContext
from authgate.authz.decision import Respond

_NO_STORE = ("cache-control", "no-store")

_STYLE = (
    "body{font:16px system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;"
    "color:#222}h1{font-size:1.4rem}.muted{color:#666;font-size:.9rem}"
    "button{font-size:1rem;padding:.4rem 1rem}th{text-align:left;padding-right:1rem}"
)
_PAGE = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width">\n<title>{title}</title>'
    "<style>{style}</style></head><body><h1>{title}</h1>{body}"
    '<p class="muted">authgate</p></body></html>\n'
)


def html_page(
    status: int,
    title: str,
    body_html: str,
    cookies: tuple[str, ...] = (),
    form_targets: tuple[str, ...] = (),
) -> Respond:
    """`form_targets`: the other origins a form on this page may reach. Browsers apply
    `form-action` to every redirect that follows the submission, not only to its first URL."""
    form_action = " ".join(("'self'", *dict.fromkeys(form_targets)))
    return Respond(
        status=status,
        headers=(
            ("content-type", "text/html; charset=utf-8"),
            _NO_STORE,
            ("x-frame-options", "DENY"),
            ("referrer-policy", "same-origin"),
            (
                "content-security-policy",
                f"default-src 'none'; style-src 'unsafe-inline'; form-action {form_action}",
            ),
        ),
        body=_PAGE.format(title=html.escape(title), style=_STYLE, body=body_html),
        cookies=cookies,
    )


def json_answer(status: int, payload: dict[str, object], cookies: tuple[str, ...] = ()) -> Respond:
    return Respond(
        status=status,
        headers=(("content-type", "application/json"), _NO_STORE),
        body=json.dumps(payload, separators=(",", ":")),
        cookies=cookies,
    )


def error(
    ctx: RequestContext,
    status: int,
    title: str,
    detail: str,
    code: str,
    reason: str = "",
    links: tuple[tuple[str, str], ...] = (),
) -> Respond:
    """An error as the client wants it: a page for browsers, JSON for API clients.

    `reason` (the policy's explanation) is shown only where the route opted in. The request id
    (Envoy's `x-request-id`, also in authgate's log line for the request) lets a user's report
    be found; `links` are (label, href) ways on from here.
    """
    request_id = ctx.headers.get("x-request-id", "")
    if ctx.wants_html:
        extra = f"<p>Why: <code>{html.escape(reason)}</code></p>" if reason else ""
        ways = "".join(
            f'<li><a href="{html.escape(href)}">{html.escape(label)}</a></li>'
            for label, href in links
        )
        nav = f"<ul>{ways}</ul>" if ways else ""
        rid = (
            f'<p class="muted">Request id: <code>{html.escape(request_id)}</code></p>'
            if request_id
            else ""
        )
        return html_page(status, title, f"<p>{html.escape(detail)}</p>{extra}{nav}{rid}")
    payload: dict[str, object] = {"error": code, "message": detail}
    if reason:
        payload["reason"] = reason
    if request_id:
        payload["request_id"] = request_id
    return json_answer(status, payload)


def continue_to(location: str, cookies: tuple[str, ...] = ()) -> Respond:
    """A page that sends the browser on to `location` itself (meta refresh). Its navigation
    starts on this site, so a SameSite=Strict cookie just set goes with it; a 302 would extend
    the redirect chain that began at the IdP (another site), which carries no Strict cookie."""
    url = html.escape(location, quote=True)
    body = f'<meta http-equiv="refresh" content="0;url={url}"><p><a href="{url}">Continue</a></p>'
    return html_page(200, "Signed in", body, cookies)


def redirect(location: str, cookies: tuple[str, ...] = ()) -> Respond:
    return Respond(status=302, headers=(("location", location), _NO_STORE), cookies=cookies)
