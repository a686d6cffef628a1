"""`authgate doctor`: ask each route's app, directly and not through Envoy, what it makes of
identities authgate did not vouch for.

`authgate check` reads the config; the doctor talks to the upstreams in `to` (TCP or Unix
socket, at most --timeout seconds a request):

- a TCP upstream whose host resolves to a non-loopback address and accepts a connection can be
  reached around the gate: a warning;
- a Jenkins upstream (`X-Jenkins` on `GET /` or `GET /whoAmI/api/json`) is asked
  `/whoAmI/api/json` with no assertion, one signed by a key authgate does not hold, one for
  another audience, an expired one (each must be anonymous: the JWT Auth plugin verifies) and a
  valid one signed with the configured signing_key (must be the doctor's test user). A Jenkins
  that fails any of them is an error naming the route, what is wrong and the plugin setting that
  fixes it. Jenkins checks the valid one with the JWKS it fetches from the route host, that is
  from a running authgate (which publishes the key of the configured signing_key);
- any other upstream gets the same requests, and what it answered is information.

Exit status: 0 when nothing is wrong, 1 with errors or warnings, 2 for a config error.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ipaddress
import json
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from authgate.assertion.signer import ASSERTION_LIFETIME_S, AssertionSigner
from authgate.check import Finding
from authgate.config import RouteRuntime, RuntimeConfig, Upstream
from authgate.errors import ConfigError

DEFAULT_TIMEOUT_S = 5.0
ASSERTION_HEADER = "X-Pomerium-Jwt-Assertion"
WHOAMI_PATH = "/whoAmI/api/json"
# The doctor's test user: the JWT Auth plugin takes the user name from `email` by default.
DOCTOR_USER = "authgate-doctor"
DOCTOR_EMAIL = "authgate-doctor@invalid"
WRONG_AUDIENCE = "not-this-route.authgate-doctor.invalid"
EXPIRED_AGO_S = 3600  # far beyond any clock skew a verifier allows


# ---- assertions ------------------------------------------------------------------------------


def assertion_claims(
    issuer: str, audience: str, now: float, *, expired: bool = False
) -> dict[str, Any]:
    """The claims authgate's own assertion carries (authgate.assertion.signer), for the doctor's
    test user; `expired`: ended EXPIRED_AGO_S ago."""
    now_i = int(now)
    start = now_i - EXPIRED_AGO_S - ASSERTION_LIFETIME_S if expired else now_i
    return {
        "iss": issuer,
        "aud": audience,
        "iat": start,
        "nbf": start,
        "exp": start + ASSERTION_LIFETIME_S,
        "jti": f"authgate-doctor-{now_i}",
        "sub": DOCTOR_USER,
        "user": DOCTOR_USER,
        "email": DOCTOR_EMAIL,
        "name": "authgate doctor",
        "groups": [],
        "sid": "authgate-doctor",
    }


@dataclass(frozen=True)
class Probe:
    name: str  # none | foreign-key | wrong-audience | expired | valid
    what: str  # for messages: "no assertion", ...
    token: str | None
    anonymous: bool  # what a verifying app must answer


def build_probes(cfg: RuntimeConfig, rt: RouteRuntime, now: float | None = None) -> list[Probe]:
    now = time.time() if now is None else now
    issuer = rt.issuer or cfg.assertion_issuer  # the route's jwt_issuer_format, if it has one
    ours = AssertionSigner(cfg.signing_key, issuer)
    stranger = AssertionSigner(ec.generate_private_key(ec.SECP256R1()), issuer)
    valid = assertion_claims(issuer, rt.hostname, now)
    return [
        Probe("none", "no assertion", None, True),
        Probe(
            "foreign-key",
            "an assertion signed by a key authgate does not hold",
            stranger.sign(valid),
            True,
        ),
        Probe(
            "wrong-audience",
            f"an assertion for another audience ({WRONG_AUDIENCE})",
            ours.sign(assertion_claims(issuer, WRONG_AUDIENCE, now)),
            True,
        ),
        Probe(
            "expired",
            "an expired assertion",
            ours.sign(assertion_claims(issuer, rt.hostname, now, expired=True)),
            True,
        ),
        Probe(
            "valid",
            f"a valid assertion (iss {issuer}, aud {rt.hostname}, email {DOCTOR_EMAIL})",
            ours.sign(valid),
            False,
        ),
    ]


# ---- Jenkins' whoAmI ------------------------------------------------------------------------


class NotWhoAmI(ValueError):
    """The answer is not Jenkins' whoAmI JSON."""


def whoami_user(doc: object) -> str | None:
    """The user Jenkins' `/whoAmI/api/json` names, None for the anonymous user.

    Jenkins (hudson.security.WhoAmI) exports name, authenticated, anonymous, details, toString
    and authorities; the anonymous user has `anonymous: true` and the name `anonymous` (and
    `authenticated: true`, so that one says nothing)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise NotWhoAmI("not Jenkins' whoAmI JSON (no `name`)")
    if doc.get("anonymous") is True or doc["name"] == "anonymous":
        return None
    return str(doc["name"])


# ---- talking to an upstream ------------------------------------------------------------------


def upstream_label(up: Upstream) -> str:
    return f"unix://{up.path}" if up.scheme == "unix" else f"{up.scheme}://{up.host}:{up.port}"


def _client(up: Upstream, timeout: float) -> httpx.Client:
    # The doctor asks about identities, not certificates: an https upstream is not verified.
    transport = httpx.HTTPTransport(uds=up.path) if up.scheme == "unix" else None
    return httpx.Client(
        transport=transport,
        timeout=timeout,
        verify=False,  # noqa: S501 (the doctor asks about identities, not certificates)
        follow_redirects=False,
    )


def _base_url(up: Upstream) -> str:
    return "http://localhost" if up.scheme == "unix" else f"{up.scheme}://{up.host}:{up.port}"


def _host_header(rt: RouteRuntime, up: Upstream) -> str | None:
    """The Host the app sees through Envoy (Pomerium's precedence), None: httpx's default."""
    route = rt.route
    if route.preserve_host_header or up.scheme == "unix":
        return rt.netloc
    if route.host_rewrite:
        return route.host_rewrite
    return None


@dataclass(frozen=True)
class Answer:
    status: int
    jenkins: str | None  # the X-Jenkins header
    body: str
    content_type: str

    def summary(self) -> str:
        kind = self.content_type.split(";")[0].strip() or "no content type"
        return f"{self.status} ({kind}, {len(self.body)} characters)"


def _get(client: httpx.Client, url: str, headers: dict[str, str]) -> Answer:
    response = client.get(url, headers={"accept": "application/json", **headers})
    return Answer(
        response.status_code,
        response.headers.get("x-jenkins"),
        response.text[:65536],
        response.headers.get("content-type", ""),
    )


# ---- reachable around the gate ---------------------------------------------------------------


def _resolve(host: str, port: int, timeout: float) -> list[str]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        infos = pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM).result(timeout)
    except (OSError, concurrent.futures.TimeoutError):
        return []
    finally:
        pool.shutdown(wait=False)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _accepts(address: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def exposure_findings(key: str, up: Upstream, timeout: float) -> list[Finding]:
    if up.scheme == "unix":
        return []
    for address in _resolve(up.host, up.port, timeout):
        if not is_loopback(address) and _accepts(address, up.port, timeout):
            where = f"[{address}]:{up.port}" if ":" in address else f"{address}:{up.port}"
            return [
                Finding(
                    "warning", key,
                    f"{upstream_label(up)} is reachable around the gate: anyone who can reach "
                    f"{where} skips authgate",
                    "bind the app to 127.0.0.1 or a Unix socket (to: unix:///path.sock), or "
                    "firewall that port so only Envoy reaches it",
                )
            ]
    return []


# ---- one upstream ----------------------------------------------------------------------------


def _plugin_fix(cfg: RuntimeConfig, rt: RouteRuntime) -> str:
    issuer = rt.issuer or cfg.assertion_issuer
    return (
        f"in Jenkins' JWT Auth plugin set acceptable issuer `{issuer}`, acceptable "
        f"audience `{rt.hostname}`, JWKS URL {rt.origin}/.well-known/pomerium/jwks.json, and "
        "turn \"Allow verification failures\" off"
    )


def _jenkins_findings(
    cfg: RuntimeConfig, rt: RouteRuntime, key: str, up: Upstream, answers: dict[str, Answer],
    probes: list[Probe],
) -> list[Finding]:
    findings = []
    fix = _plugin_fix(cfg, rt)
    label = upstream_label(up)
    for probe in probes:
        answer = answers[probe.name]
        try:
            if answer.status != 200:
                raise NotWhoAmI(f"answered {answer.summary()}")
            user = whoami_user(json.loads(answer.body))
        except (NotWhoAmI, ValueError) as exc:
            findings.append(
                Finding(
                    "error", key,
                    f"Jenkins at {label}: {WHOAMI_PATH} with {probe.what}: {exc}",
                    "make sure this upstream is Jenkins and /whoAmI/api/json answers",
                )
            )
            continue
        if probe.anonymous and user is not None:
            findings.append(
                Finding(
                    "error", key,
                    f"Jenkins at {label} takes {probe.what} as user {user!r}: anyone who can "
                    "send it a header is whoever they claim to be",
                    fix,
                )
            )
        elif not probe.anonymous and user not in (DOCTOR_EMAIL, DOCTOR_USER):
            seen = "anonymous" if user is None else f"user {user!r}"
            unsigned = (
                "; signing_key is not set, so the doctor signed with a random key"
                if cfg.settings.signing_key is None else ""
            )
            findings.append(
                Finding(
                    "error", key,
                    f"Jenkins at {label} answered {seen} to {probe.what}, not "
                    f"{DOCTOR_EMAIL!r}: signed-in users would be anonymous{unsigned}",
                    fix + "; username claim `email`; Jenkins fetches the JWKS through the "
                    "gate, so authgate must be running with this config's signing_key",
                )
            )
    if not findings:
        findings.append(
            Finding(
                "info", key,
                f"Jenkins at {label} answered anonymous to no assertion, a foreign key, another "
                f"audience and an expired assertion, and {DOCTOR_EMAIL!r} to a valid one",
                "nothing to do",
            )
        )
    return findings


def upstream_findings(
    cfg: RuntimeConfig, rt: RouteRuntime, up: Upstream, timeout: float
) -> list[Finding]:
    key = f"routes[{rt.index}] {rt.origin}"
    findings = exposure_findings(key, up, timeout)
    probes = build_probes(cfg, rt)
    base = _base_url(up)
    host = _host_header(rt, up)
    common = {"host": host} if host else {}
    try:
        with _client(up, timeout) as client:
            root = _get(client, base + "/", common)
            answers = {
                p.name: _get(
                    client, base + WHOAMI_PATH,
                    {**common, **({ASSERTION_HEADER: p.token} if p.token else {})},
                )
                for p in probes
            }
    except httpx.HTTPError as exc:
        return [
            *findings,
            Finding(
                "warning", key,
                f"cannot reach {upstream_label(up)}: {type(exc).__name__}: {exc or 'no answer'}",
                "start the app, or fix `to`; then run the doctor again",
            ),
        ]
    jenkins = root.jenkins or answers["none"].jenkins
    if jenkins:
        if not rt.route.pass_identity_headers:
            findings.append(
                Finding(
                    "error", key,
                    f"Jenkins {jenkins} at {upstream_label(up)}, but this route sends it no "
                    f"{ASSERTION_HEADER}: everyone is anonymous to the JWT Auth plugin",
                    "set `pass_identity_headers: true` on this route",
                )
            )
        return findings + _jenkins_findings(cfg, rt, key, up, answers, probes)
    seen = ", ".join(f"{p.name} {answers[p.name].summary()}" for p in probes)
    findings.append(
        Finding(
            "info", key,
            f"{upstream_label(up)} is not Jenkins (no X-Jenkins header; / answered "
            f"{root.status}); GET {WHOAMI_PATH} answered: {seen}",
            "nothing to check here: make sure the app verifies the assertion if it reads one",
        )
    )
    return findings


def diagnose(cfg: RuntimeConfig, timeout: float = DEFAULT_TIMEOUT_S) -> list[Finding]:
    findings: list[Finding] = []
    if cfg.settings.signing_key is None:
        findings.append(
            Finding(
                "warning", "signing_key",
                "not set: the doctor signs its valid assertion with a random key no running "
                "authgate publishes",
                "set signing_key (authgate keygen) in the config authgate runs with",
            )
        )
    for rt in cfg.routes:
        for up in rt.route.upstreams:
            findings.extend(upstream_findings(cfg, rt, up, timeout))
    return findings


# ---- output and command line -----------------------------------------------------------------


def exit_code(findings: Sequence[Finding]) -> int:
    return 1 if any(f.severity in ("error", "warning") for f in findings) else 0


def render(findings: Sequence[Finding], fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps([asdict(f) for f in findings], indent=2) + "\n"
    if not findings:
        return "authgate doctor: no routes\n"
    return "".join(f.line() + "\n" for f in findings)


def cmd_doctor(args: argparse.Namespace) -> int:
    from authgate.config import build_runtime, load_settings

    if not args.timeout > 0:
        raise ConfigError("--timeout", "must be a positive number of seconds")
    cfg = build_runtime(load_settings(args.config), warn=False)
    findings = diagnose(cfg, args.timeout)
    sys.stdout.write(render(findings, args.format))
    return exit_code(findings)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="config.yaml (Pomerium format)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds for each request to an upstream (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.set_defaults(func=cmd_doctor)


def register(sub: Any) -> argparse.ArgumentParser:
    """Add `doctor` to `authgate`'s subcommands (`sub` from add_subparsers())."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "doctor",
        help="ask each route's app, directly, what it makes of forged, misdirected, expired "
        "and valid assertions (exit 0 fine, 1 something wrong, 2 config error)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="authgate doctor")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"authgate: config error: {exc}", file=sys.stderr)
        return 2
    return code
