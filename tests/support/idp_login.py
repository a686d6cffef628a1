"""Drive the test IdP's HTML pages (tests/idp/server.js) with httpx, without a browser.

* Login page: ``GET /interaction/<uid>`` shows ``<form method="post"
  action="/interaction/<uid>/login">`` with ``email`` and ``password`` inputs.
* Logout page: ``GET /session/end?...`` shows a form (auto-submitted by JS in a
  browser) posting ``xsrf`` + ``logout=yes`` to ``/session/end/confirm``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx

LOGIN_ACTION_MARKER = "/interaction/"
LOGOUT_ACTION_MARKER = "/session/end/confirm"


@dataclass
class HTMLForm:
    """A ``<form>`` found in a page: its attributes and its named inputs."""

    action: str
    method: str
    form_id: str | None
    fields: dict[str, str] = field(default_factory=dict)
    input_types: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[HTMLForm] = []
        self._current: HTMLForm | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = HTMLForm(
                action=a.get("action", ""),
                method=a.get("method", "get").lower(),
                form_id=a.get("id"),
            )
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and a.get("name"):
            name = a["name"]
            self._current.fields[name] = a.get("value", "")
            self._current.input_types[name] = a.get("type", "text").lower()

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def parse_forms(html: str) -> list[HTMLForm]:
    """All forms of an HTML document (inputs only; buttons and selects are ignored)."""
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


def _is_html(resp: httpx.Response) -> bool:
    content_type: str = resp.headers.get("content-type", "")
    return content_type.startswith("text/html")


def _find_login_form(resp: httpx.Response) -> HTMLForm | None:
    if not _is_html(resp):
        return None
    for form in parse_forms(resp.text):
        if (
            form.method == "post"
            and LOGIN_ACTION_MARKER in form.action
            and form.input_types.get("password") == "password"
            and "email" in form.fields
        ):
            return form
    return None


def _find_logout_form(resp: httpx.Response) -> HTMLForm | None:
    if not _is_html(resp):
        return None
    for form in parse_forms(resp.text):
        if form.method == "post" and LOGOUT_ACTION_MARKER in form.action:
            return form
    return None


def is_idp_login_page(resp: httpx.Response) -> bool:
    """True if ``resp`` is the test IdP's login form (first display or after a bad password)."""
    return resp.status_code == 200 and _find_login_form(resp) is not None


def idp_login_error(resp: httpx.Response) -> str | None:
    """The error message shown on a re-displayed login form, if any."""
    if not is_idp_login_page(resp):
        return None
    marker = 'class="error" role="alert">'
    start = resp.text.find(marker)
    if start < 0:
        return None
    start += len(marker)
    return resp.text[start : resp.text.find("<", start)]


def submit_idp_login(
    client: httpx.Client, page: httpx.Response, email: str, password: str
) -> httpx.Response:
    """Fill in and POST the IdP login form found in ``page``; return the final response.

    Redirects are followed (login -> consent (automatic) -> the client's redirect_uri).
    """
    form = _find_login_form(page)
    if form is None:
        raise AssertionError(
            f"not the IdP login page: {page.status_code} {page.url}\n{page.text[:2000]}"
        )
    data = {
        name: value for name, value in form.fields.items() if form.input_types[name] == "hidden"
    }
    data.update(email=email, password=password)
    action = urljoin(str(page.url), form.action)
    return client.post(action, data=data, follow_redirects=True)


def is_idp_logout_page(resp: httpx.Response) -> bool:
    """True if ``resp`` is the IdP's (JS auto-submitting) end-session confirmation page."""
    return resp.status_code == 200 and _find_logout_form(resp) is not None


def submit_idp_logout(client: httpx.Client, page: httpx.Response) -> httpx.Response:
    """Do what the logout page's JavaScript does: POST its form; return the final response.

    The IdP then redirects to the post_logout_redirect_uri (or its "Signed out" page).
    """
    form = _find_logout_form(page)
    if form is None:
        raise AssertionError(
            f"not the IdP logout page: {page.status_code} {page.url}\n{page.text[:2000]}"
        )
    action = urljoin(str(page.url), form.action)
    return client.post(action, data=form.fields, follow_redirects=True)
