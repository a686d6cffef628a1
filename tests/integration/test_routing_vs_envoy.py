"""Differential test: `authgate.routing.select` picks the route the real Envoy picks.

`select` chooses the route (and so the policy) for `authgate explain` and, behind an Envoy the
user wrote, for authz itself; if it disagrees with Envoy's matching on the bootstrap authgate
generates, a request is judged by one route's policy and served by another. So every case here
is sent to a real Envoy running that bootstrap, byte for byte over a raw socket, and Envoy's
choice is read back from the ext_authz Check it makes: a tiny grpc.aio ext_authz server answers
every Check with a denial whose body names the route id and kind from `context_extensions` and
the path Envoy sent. Envoy's own 404 (no virtual host or route) and 400 (path refused) are
told apart from those by status and body.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, status_pb2

from authgate._pb.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authgate._pb.envoy.type.v3 import http_status_pb2
from authgate.config import RuntimeConfig, build_runtime, settings_from_mapping
from authgate.contract import AUTHENTICATE_ROUTE_ID, EXT_KIND, EXT_ROUTE_ID
from authgate.envoy import EnvoyProcess, build_bootstrap
from authgate.routing import normalize_path, not_normalized, select

# A status no Envoy-generated answer uses: the body is authz's report of the Check.
REPORT_STATUS = 299
UPSTREAM = "http://127.0.0.1:1"  # never reached: authz denies every request


def _route(from_: str, id_: str, **match: str) -> dict[str, Any]:
    return {"from": from_, "to": UPSTREAM, "id": id_, "allow_any_authenticated_user": True,
            **match}


CONFIG: dict[str, Any] = {
    "address": "127.0.0.1:0",  # replaced by the fixture
    "insecure_server": True,
    "authenticate_service_url": "http://authenticate.test",
    "idp_provider_url": "https://idp.test",
    "idp_client_id": "authgate",
    "idp_client_secret": "secret",
    "routes": [
        # jenkins.test: no port (so also jenkins.test:80), every kind of match, a catch-all last.
        _route("http://jenkins.test", "health", path="/health"),
        _route("http://jenkins.test", "admin", prefix="/admin"),
        _route("http://jenkins.test", "api", regex="^/api/v[0-9]+/.*$"),
        _route("http://jenkins.test", "job", prefix="/job/"),
        _route("http://jenkins.test", "dir", path="/dir/"),
        _route("http://jenkins.test", "upper", path="/Upper"),
        _route("http://jenkins.test", "tilde", prefix="/~user"),
        _route("http://jenkins.test", "files", regex=r"/files/[^/]*\.txt"),
        _route("http://jenkins.test", "jenkins", prefix="/"),
        # app.test:8443: a port, overlapping routes in config order, no catch-all.
        _route("http://app.test:8443", "public", prefix="/public"),
        _route("http://app.test:8443", "public-exact", path="/public/exact"),  # shadowed
        _route("http://app.test:8443", "json", regex=r".*\.json"),
        _route("http://app.test:8443", "exact", path="/exact"),
        _route("http://app.test:8443", "dots", regex=r"/d/.*"),
        # office.test: only the root.
        _route("http://office.test", "root", path="/"),
    ],
}


# ---------------------------------------------------------------------------- the cases

ROUTE_HOSTS = [
    "jenkins.test", "jenkins.test:80", "JENKINS.test", "Jenkins.Test:80", "jenkins.test:8443",
    "jenkins.test.", "jenkins.test.:80", "app.test:8443", "APP.TEST:8443", "app.test",
    "app.test:80", "app.test:443", "app.test.:8443", "office.test", "office.test:80",
]
OTHER_HOSTS = [
    "authenticate.test", "authenticate.test:80", "AUTHENTICATE.TEST", "authenticate.test:8443",
    "authenticate.test.", "unknown.test", "jenkins", "test", "127.0.0.1", "xjenkins.test",
    "jenkins.test.evil", "*.test", "jenkins.test:080", "jenkins.test:", "app.test:08443",
    "authenticate.test:080", "JENKINS.TEST.", "[::1]", "[::1]:80", "jenkins.test:80:80",
    "jenkins.test:0", "jenkins.test:80a", "user@jenkins.test", "jenkins..test", ".jenkins.test",
    "%6aenkins.test", "jenkins.test%3a80", "",
]
# Hosts Envoy answers 400 to (characters outside an authority), whatever the path.
BAD_HOSTS = [
    "j\u00e9nkins.test", "jenkins.test/", "jenkins.test\\", "jen{kins.test", "jenkins.test#x",
    "jenkins.test?", 'jenkins"x.test', "jenkins.test`", "jenkins.test|", "jenkins.test<",
    "jenkins.test^", "jenkins\tx.test",
]

# Paths for every route host: the route options and authgate's internal paths, each under
# several spellings that Envoy's normalisation (or refusal) must treat as the route matcher does.
BASE_PATHS = [
    "/", "/health", "/health/", "/healthz", "/HEALTH", "/admin", "/admin/", "/admin/x",
    "/adminx", "/Admin", "/ADMIN/x", "/api/v1/x", "/api/v1/", "/api/v1", "/api/vX/y",
    "/api/v12/a/b", "/job/", "/job", "/job/a", "/dir/", "/dir", "/Upper", "/upper",
    "/~user", "/~user/x", "/files/a.txt", "/files/a/b.txt", "/files/.txt", "/public",
    "/public/", "/public/exact", "/publicx", "/exact", "/exact/", "/x.json", "/a/b.json",
    "/.json", "/d/", "/d", "/d/x/y", "/d/x.json", "/x/files/a.txt", "/files/a.txt.bak", "/nothing",
    "/.pomerium", "/.pomerium/", "/.pomerium/x", "/.pomerium/sign_out", "/.pomeriumx",
    "/.POMERIUM/", "/.well-known/pomerium", "/.well-known/pomerium/",
    "/.well-known/pomerium/jwks.json", "/.well-known/pomeriumx", "/.well-known/",
]
SPELLINGS = [
    # `//`, `.` and `..` segments
    "//admin", "///admin", "/admin//x", "/./admin", "/admin/./x", "/x/../admin", "/x/./../admin",
    "/admin/..", "/admin/.", "/admin/x/..", "/admin/x/.", "/..", "/.", "/../admin",
    "/../../../admin", "/x/../../admin", "/.../admin", "/..admin", "/admin..", "/admin/..x",
    "/health/.", "/health/..", "/x/../health", "/health/../health", "//health",
    "/x/..//admin", "/x//../admin", "/public/../admin", "/public/./exact", "/public//exact",
    "/.pomerium/..", "/.pomerium/../admin", "/x/../.pomerium/", "/x/../.pomerium",
    "//.pomerium", "/.pomerium/.", "/.pomerium//", "/./.well-known/pomerium",
    "/.well-known/x/../pomerium/jwks.json", "/.well-known/pomerium/..", "/x/..",
    "/d/..", "/d/.", "/d/../d/x", "/dir/.", "/dir/x/..", "/files/x/../a.txt",
    # %2e spellings of dot segments
    "/%2e%2e/admin", "/x/%2e%2e/admin", "/x/%2E%2E/admin", "/x/.%2e/admin", "/x/%2e./admin",
    "/%2e/admin", "/%2E/admin", "/admin/%2e", "/admin/%2e%2e", "/x/%2e%2e", "/%2e",
    "/%2e%2e", "/%2e%2e%2e/admin", "/x%2e/admin", "/%2epomerium/", "/%2Epomerium",
    "/%2ewell-known/pomerium", "/.well-known/pomerium/jwks%2ejson", "/x.%2ejson",
    "/public/%2e%2e/admin", "/x/%2e%2e/.pomerium/",
    # escaped slashes and backslashes (refused), raw backslashes
    "/admin%2fx", "/admin%2Fx", "/x%2f..%2fadmin", "/%2fadmin", "/admin%5cx", "/admin%5Cx",
    "/x/..%5cadmin", "/admin\\x", "/x\\..\\admin", "\\admin", "/x/..\\admin",
    "/.pomerium%2f", "/public%2f..%2fadmin", "/a%252fb",
    # other escapes: unreserved characters, reserved ones, `%25`, bad escapes
    "/%41dmin", "/%61dmin", "/admi%6e", "/ADMI%6E", "/%61%64%6d%69%6e/x", "/%7euser",
    "/%7Euser", "/~user%2dx", "/%2dx", "/%5fx", "/health%30", "/%68ealth", "/Uppe%72",
    "/%55pper", "/public%2Fexact", "/%70ublic", "/x%2ejson", "/api/v%31/x", "/api/v1%2Fx",
    "/job%2f", "/job/%7e", "/%25", "/%2541dmin", "/admin%25", "/a%20b", "/a%3fb", "/a%23b",
    "/a%3Ab", "/a%40b", "/a%21b", "/a%2Bb", "/a%3db", "/a%26b", "/a%5bb", "/a%7bb", "/a%00b",
    "/a%zzb", "/a%", "/a%4", "/%e2%82%ac", "/%C3%A9", "/a%7fb", "/%2E%2e/.pomerium",
    "/.%70omerium/", "/.well-known/%70omerium/jwks.json", "/files/a%2etxt",
    "/a/%2ex/b", "/%2eadmin", "/admin%2e", "/x/%2e%2e%2e/..", "/a/..%2e", "/%2e%2e.",
    # a `%` that decoding completes into an escape is itself escaped (`%25`)
    "/a%%34%31", "/a%%32%66b", "/a%2%66", "/a%%35%63b", "/a%%300", "/a%%30%30", "/%%36%31dmin",
    "/1%/../ab%31%32", "/a%/%41", "/a%4%31", "/a%%%34%31",
    # `//` that merge_slashes keeps or makes
    "//", "///", "/.//", "/a/..//", "/./", "/../", "/.%2e/", "//?x", "/a//", "////a",
    # queries and fragments
    "/admin?x=1", "/x?/../admin", "/x?a=/../admin", "/?admin", "/health?", "/health?x",
    "/public?/../../admin", "/.pomerium?x", "/x/..?y=/..", "/x/%2e%2e?q", "/admin#frag",
    "/x#/../admin", "/health#", "/x?#", "/x?a#b", "/.pomerium#x", "/a%2fb?x",
    "/x?a=%2f", "/x?a=\\", "/d/x?y=.json",
    # odd characters the codec may refuse or keep
    "/a;b", "/admin;x", "/a,b", "/a'b", "/a!b", "/a$b", "/a(b)", "/a*b", "/a+b", "/a=b",
    "/a@b", "/a:b", "/a|b", "/a^b", "/a`b", "/a{b}", "/a[b]", "/a<b>", "/a\"b", "/\x7f",
    "*", "admin", "", "\\admin", "/a b", "/a\tb", "/a\x01b", "/x?a\x01b", "/caf\u00e9",
    "/x?\u00e9", "/a\udc80b", "/\x00", "/a%00b", "/x?a=%00", "/a%7fb", "/a%80b",
]


def _long_paths() -> list[str]:
    return [
        "/admin/" + "a" * 4000,
        "/" + "x/" * 2000 + "../" * 2000 + "admin",
        "/" + "./" * 1500 + "health",
        "/" + "/" * 3000 + "admin",
        "/x" + "/.." * 1500 + "/admin",
        "/api/v1/" + "%41" * 1000,
    ]


def _every_character() -> list[str]:
    """Each %XX (both hex cases), and each raw character a request line can carry, in the path
    and in the query: which ones Envoy decodes, escapes, keeps or refuses."""
    paths = []
    for value in range(256):
        paths += [f"/a%{value:02X}b", f"/a%{value:02x}b"]
    for code in [*range(0x01, 0x20), *range(0x21, 0x80), 0x80, 0xFF]:
        if chr(code) in "\r\n":
            continue
        char = chr(code) if code < 0x80 else chr(0xDC00 + code)  # sent as the raw byte
        paths += [f"/a{char}b", f"/x?a{char}b"]
    return paths


def build_cases() -> list[tuple[str, str]]:
    cases: list[tuple[str, str]] = []
    paths = BASE_PATHS + SPELLINGS
    for target in _every_character():
        cases.append(("jenkins.test", target))
    for target in paths:
        cases.append(("jenkins.test", target))
        cases.append(("app.test:8443", target))
    for host in ROUTE_HOSTS + OTHER_HOSTS + BAD_HOSTS:
        for target in ("/", "/admin", "/public", "/.pomerium/", "/.well-known/pomerium",
                       "/x/../admin", "/a%2fb", "/exact"):
            cases.append((host, target))
    for target in ("/", "/x", "//", "/.", "/..", "/%2e%2e/x", "/oauth2/callback?code=1"):
        cases.append(("office.test", target))
        cases.append(("authenticate.test", target))
    for target in _long_paths():
        cases.append(("jenkins.test", target))
    return list(dict.fromkeys(cases))


CASES = build_cases()


# ---------------------------------------------------------------------------- the fake authz


class ReportingAuthz(external_auth_pb2_grpc.AuthorizationServicer):
    """Denies every routed Check with a body naming the route and the path Envoy sent; allows
    a Check without context extensions, so that Envoy's own answer (404) shows."""

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        ext = dict(request.attributes.context_extensions)
        if not ext:
            return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))
        report = {
            "route_id": ext.get(EXT_ROUTE_ID),
            "kind": ext.get(EXT_KIND),
            "path": request.attributes.request.http.path,
        }
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=REPORT_STATUS),  # type: ignore[arg-type]
                body=json.dumps(report),
            ),
        )


class AuthzThread:
    """The grpc.aio server on a Unix socket, on its own event loop in a thread."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=10)

    async def _start(self) -> None:
        self._server = grpc.aio.server()
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(  # type: ignore[no-untyped-call]
            ReportingAuthz(), self._server
        )
        self._server.add_insecure_port(f"unix:{self.socket_path}")
        await self._server.start()

    async def _stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)

    def __enter__(self) -> AuthzThread:
        self._thread.start()
        self._run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class UniqueEnvoy(EnvoyProcess):
    """Its own shared-memory base id, so it never meets another Envoy on this machine."""

    def command(self) -> list[str]:
        return [*super().command(), "--base-id", str(random.randrange(10_000, 2**31))]


# ---------------------------------------------------------------------------- observing Envoy


@dataclass(frozen=True)
class Seen:
    status: int
    kind: str | None = None  # from authz's report (REPORT_STATUS only)
    route_id: str | None = None
    path: str | None = None  # the :path Envoy sent to authz
    body: bytes = b""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
        data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 "):
        raise AssertionError(f"Envoy did not answer with HTTP/1.1: {data[:200]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(body) < length and (chunk := sock.recv(65536)):
            body += chunk
    else:  # chunked or close-delimited: read to the end
        while chunk := sock.recv(65536):
            body += chunk
    return int(lines[0].split(" ")[1]), headers, body


def send(port: int, host: str, target: str) -> Seen:
    request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode("utf-8", "surrogateescape"))
        status, _, body = _read_response(sock)
    if status != REPORT_STATUS:
        return Seen(status, body=body)
    report = json.loads(body)
    return Seen(status, report["kind"], report["route_id"], report["path"], body)


def runtime(port: int) -> RuntimeConfig:
    raw = {**CONFIG, "address": f"127.0.0.1:{port}"}
    return build_runtime(settings_from_mapping(raw, environ={}), warn=False)


@dataclass
class Observed:
    cfg: RuntimeConfig
    answers: dict[tuple[str, str], Seen]


@pytest.fixture(scope="module")
def observed() -> Iterator[Observed]:
    workdir = Path(tempfile.mkdtemp(prefix="ag-rve-", dir="/tmp"))  # short Unix socket paths
    port = free_port()
    cfg = runtime(port)
    try:
        with AuthzThread(workdir / "authz.sock") as authz:
            doc = build_bootstrap(cfg, [f"unix:{authz.socket_path}"],
                                  admin_address=f"127.0.0.1:{free_port()}")
            with (UniqueEnvoy(doc, workdir=workdir / "envoy", concurrency=2),
                  ThreadPoolExecutor(8) as pool):
                seen = list(pool.map(lambda case: send(port, *case), CASES))
        yield Observed(cfg, dict(zip(CASES, seen, strict=True)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------- the comparisons


def envoy_choice(seen: Seen) -> tuple[str, ...]:
    if seen.status == REPORT_STATUS:
        return (str(seen.kind), str(seen.route_id))
    if seen.status == 404:
        return ("no route",)
    if seen.status == 400:
        return ("refused",)
    return ("unexpected", str(seen.status), seen.body[:200].decode("latin-1"))


def select_choice(cfg: RuntimeConfig, host: str, target: str) -> tuple[str, ...]:
    chosen = select(cfg, host, target)
    if chosen.refused:
        return ("refused",)
    if chosen.kind is None:
        return ("no route",)
    route_id = chosen.route.id if chosen.route is not None else AUTHENTICATE_ROUTE_ID
    return (chosen.kind.value, route_id)


def _case(host: str, target: str) -> str:
    shown = target if len(target) <= 90 else f"{target[:60]}...({len(target)} chars)"
    return f"Host {host!r} {shown!r}"


def _report(what: str, problems: list[str]) -> str:
    return f"{len(problems)} {what}:\n" + "\n".join(problems[:60])


def test_select_picks_the_route_envoy_picks(observed: Observed) -> None:
    problems = []
    for (host, target), seen in observed.answers.items():
        envoy = envoy_choice(seen)
        ours = select_choice(observed.cfg, host, target)
        if envoy != ours:
            note = select(observed.cfg, host, target).note
            problems.append(f"{_case(host, target)}: Envoy {envoy}, select {ours} ({note})")
    assert not problems, _report("disagreements between Envoy and routing.select", problems)


def test_normalize_path_is_the_path_envoy_forwards(observed: Observed) -> None:
    problems = []
    forwarded = 0
    for (host, target), seen in observed.answers.items():
        if seen.status != REPORT_STATUS:
            continue
        forwarded += 1
        _, mark, query = target.partition("?")
        expected = normalize_path(target) + mark + query  # the query goes through untouched
        if seen.path != expected:
            problems.append(f"{_case(host, target)}: Envoy sent {seen.path!r}, "
                            f"normalize_path gives {expected!r}")
    assert forwarded > len(CASES) // 3  # most cases reach authz, so this compares something
    assert not problems, _report("paths normalised differently", problems)


def test_not_normalized_flags_every_path_envoy_changes_or_refuses(observed: Observed) -> None:
    """Behind a user's Envoy, authz refuses what `not_normalized` flags: it must flag every
    path the generated Envoy would rewrite or refuse, and nothing Envoy passes through as is."""
    missed, false_alarms = [], []
    for (host, target), seen in observed.answers.items():
        if host in BAD_HOSTS or seen.status == 404:
            continue  # refused for the Host, or not routed: Envoy says nothing about the path
        raw_path = target.partition("?")[0]
        changed = seen.status != REPORT_STATUS or (seen.path or "").partition("?")[0] != raw_path
        reason = not_normalized(target)
        if changed and reason is None:
            missed.append(f"{_case(host, target)}: Envoy answered {seen.status} with path "
                          f"{seen.path!r}, not_normalized says nothing")
        if not changed and reason is not None:
            false_alarms.append(f"{_case(host, target)}: Envoy keeps it, not_normalized says "
                                f"{reason!r}")
    assert not missed, _report("paths Envoy changes or refuses but not_normalized passes", missed)
    assert not false_alarms, _report("paths not_normalized refuses that Envoy keeps", false_alarms)


def test_the_cases_reach_every_route_and_every_outcome(observed: Observed) -> None:
    """Guards the comparison itself: every configured route, authgate's internal and
    authenticate routes, Envoy's 404 and its 400 all occur among Envoy's answers."""
    outcomes = {envoy_choice(seen) for seen in observed.answers.values()}
    assert not [o for o in outcomes if o[0] == "unexpected"], outcomes
    reached = {o[1] for o in outcomes if o[0] == "route"}
    assert reached == {rt.id for rt in observed.cfg.routes} - {"public-exact"}  # shadowed
    assert {o[1] for o in outcomes if o[0] == "internal"} == {"health", "public", "root"}
    assert ("authenticate", AUTHENTICATE_ROUTE_ID) in outcomes
    assert {("no route",), ("refused",)} <= outcomes
