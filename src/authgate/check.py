"""`authgate check`: lint a config for the access-control mistakes that open an app to people it
was not meant for (Jenkins' own documentation warns about most of them).

Each finding has a severity — `error` when anyone (signed out, or anyone who can make an account
at a public identity provider) can get in; `warning` for everything else that is probably wrong;
`info` for facts worth knowing — the config key it is about, what is wrong and the fix.
Exit status: 0 with no errors or warnings, 1 with warnings only, 2 with errors.

Upstream host names in `to` are looked up (in threads, at most RESOLVE_TIMEOUT_S for a name), so
a typo or a name that only resolves elsewhere shows here rather than as Envoy's "no healthy
upstream" after sign-in; `authgate run` and `authgate authz` print the same lines as they start.
"""

import contextlib
import json
import math
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from authgate.config import Route, RuntimeConfig, Settings
from authgate.config.runtime import issuer_for
from authgate.config.schema import decode_base64
from authgate.envoy.upstream_cluster import is_ip_literal
from authgate.policy import CompiledPolicy, Identity, Node, compile_route_policy
from authgate.policy.analysis import (
    ANYONE,
    Reach,
    Visitor,
    any_allow,
    decide,
    deciding_atoms,
    evaluate,
    free_atoms,
    mentions_identity,
    opening_block,
    reach,
)
from authgate.policy.ppl import criteria

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    severity: str
    key: str
    message: str
    fix: str

    def line(self) -> str:
        return f"{self.severity}: {self.key}: {self.message} (fix: {self.fix})"


def exit_code(findings: Iterable[Finding]) -> int:
    severities = {f.severity for f in findings}
    return 2 if "error" in severities else 1 if "warning" in severities else 0


def render(findings: list[Finding], fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps([asdict(f) for f in findings], indent=2) + "\n"
    if not findings:
        return "authgate check: no findings\n"
    return "".join(f.line() + "\n" for f in findings)


# ---- identity providers where anyone can make an account -----------------------------------


@dataclass(frozen=True)
class PublicIdp:
    name: str
    consumer_domains: tuple[str, ...]  # addresses anyone can get there
    why: str  # why anyone can sign in there


_GOOGLE = PublicIdp(
    "Google", ("gmail.com",), "any Google account can sign in, a free gmail.com one included"
)
_GITHUB = PublicIdp(
    "GitHub", ("users.noreply.github.com",), "anyone can make a GitHub account in a minute"
)
_GITLAB = PublicIdp("GitLab.com", ("gitlab.com",), "anyone can make a GitLab.com account")
_MICROSOFT = PublicIdp(
    "Microsoft",
    ("outlook.com", "hotmail.com"),
    "the multi-tenant endpoints (/common, /organizations, /consumers) accept accounts from "
    "any organisation's tenant or any personal Microsoft account, not just yours",
)
_APPLE = PublicIdp(
    "Apple", ("privaterelay.appleid.com",), "anyone with an Apple ID can sign in"
)
_FACEBOOK = PublicIdp("Facebook", ("facebook.com",), "anyone can make a Facebook account")
_BITBUCKET = PublicIdp("Bitbucket", ("bitbucket.org",), "anyone can make a Bitbucket account")
_AUTH0 = PublicIdp(
    "Auth0",
    (),
    "Auth0 tenants let anyone sign up (database and social connections) unless sign-ups "
    "are disabled",
)
_PUBLIC_HOSTS = {
    "accounts.google.com": _GOOGLE,
    "github.com": _GITHUB,
    "api.github.com": _GITHUB,
    "gitlab.com": _GITLAB,
    "login.live.com": _MICROSOFT,
    "appleid.apple.com": _APPLE,
    "www.facebook.com": _FACEBOOK,
    "facebook.com": _FACEBOOK,
    "bitbucket.org": _BITBUCKET,
}
# Auth0 tenants: <tenant>.auth0.com and regional <tenant>.<region>.auth0.com.
_PUBLIC_DOMAIN_SUFFIXES = {".auth0.com": _AUTH0}
# Microsoft Entra ID is public only at the multi-tenant endpoints.
_MICROSOFT_HOSTS = ("login.microsoftonline.com", "login.windows.net", "login.microsoft.com")
_MICROSOFT_OPEN_TENANTS = (
    "common",
    "consumers",
    "organizations",
    "9188040d-6c67-4c5b-b112-36a304b66dad",  # the personal-accounts tenant
)


def public_idp(issuer_url: str) -> PublicIdp | None:
    parts = urlsplit(issuer_url)
    host = (parts.hostname or "").lower().rstrip(".")
    if host in _MICROSOFT_HOSTS:
        tenant = parts.path.strip("/").partition("/")[0].lower()
        return _MICROSOFT if tenant in _MICROSOFT_OPEN_TENANTS else None
    for suffix, idp in _PUBLIC_DOMAIN_SUFFIXES.items():
        if host.endswith(suffix):
            return idp
    return _PUBLIC_HOSTS.get(host)


def strangers(idp: PublicIdp) -> list[Identity]:
    """People anyone can become at a public IdP: an address at the IdP's own domain, or at a
    domain the attacker owns; verified email, no groups."""
    out = []
    for domain in (*idp.consumer_domains, "stranger.invalid"):
        email = f"stranger@{domain}"
        claims = {"email": email, "email_verified": True, "sub": "stranger", "name": "Stranger"}
        out.append(Identity(user="stranger", email=email, name="Stranger", claims=claims))
    return out


# ---- routes --------------------------------------------------------------------------------


def is_jenkins(route: Route) -> bool:
    """The heuristic for "this is the Jenkins route": its `from`, `to`, `id` or `name` says so."""
    names = [route.from_, *route.to, route.id or "", route.name or ""]
    return any("jenkins" in n.lower() for n in names)


def reads_assertion(route: Route) -> bool:
    """The app behind the route reads X-Pomerium-Jwt-Assertion (or should: Jenkins' JWT Auth
    plugin does)."""
    return route.pass_identity_headers or is_jenkins(route)


def route_policy(route: Route, key: str) -> CompiledPolicy:
    return compile_route_policy(
        policy=route.policy,
        allow_public_unauthenticated_access=route.allow_public_unauthenticated_access,
        allow_any_authenticated_user=route.allow_any_authenticated_user,
        allowed_users=route.allowed_users,
        allowed_domains=route.allowed_domains,
        allowed_groups=route.allowed_groups,
        where=key,
    )


def _condition(policy: CompiledPolicy, visitor: Visitor, result: Reach) -> str:
    assert result.some is not None
    if result.always:
        return "for every request"
    atoms = deciding_atoms(policy, result.some, free_atoms(policy, visitor))
    return "when " + " and ".join(atoms) if atoms else "for some requests"


def _negates_identity(block: Node) -> bool:
    return any(n.kind in ("not", "nor") and mentions_identity(n) for n in _operators(block))


def _operators(node: Node) -> Iterable[Node]:
    if node.kind != "criterion":
        yield node
        for child in node.children:
            yield from _operators(child)


def _signed_out_findings(
    policy: CompiledPolicy, key: str, jenkins: bool, strict: bool
) -> tuple[list[Finding], bool]:
    """Findings about signed-out visitors; True when they can get in from anywhere. `strict`:
    an open route is an error, not a warning (the app expects an identity)."""
    anon = reach(policy, Visitor(None), decide)
    if anon.unknown:
        return [
            Finding(
                "info", f"{key}.policy",
                "too many distinct criteria to check who this policy lets in",
                "split the policy into simpler rules",
            )
        ], False
    app = "Jenkins" if jenkins else "this app"
    if anon.some is not None:
        block = opening_block(policy, anon.some)
        assert block is not None
        condition = _condition(policy, Visitor(None), anon)
        explicit = block.label == "allow_public_unauthenticated_access" or any(
            n.name == "accept" for n in criteria(block)
        )
        if explicit and anon.always:
            return [
                Finding(
                    "error" if strict else "warning",
                    block.where,
                    f"anyone can do anything: {app} is public, no sign-in and no identity "
                    "reaches it",
                    "remove it and write a policy (e.g. allowed_domains), unless the app "
                    "has nothing to protect",
                )
            ], True
        if explicit:
            return [
                Finding(
                    "error" if strict else "warning",
                    block.where,
                    f"signed-out visitors get in {condition}",
                    "add an identity criterion (domain, email, groups, claim/...) or "
                    "`authenticated_user: true`, unless that part of the app is public",
                )
            ], True
        if _negates_identity(block):
            return [
                Finding(
                    "error",
                    block.where,
                    f"signed-out visitors get in {condition} (`not`/`nor` over identity "
                    "criteria is true without a session, as in Pomerium)",
                    "add `- authenticated_user: true` to the same `and`, or move the negated "
                    "criteria into a `deny` rule",
                )
            ], True
        return [
            Finding(
                "error",
                block.where,
                f"signed-out visitors get in {condition}: no identity criterion guards "
                f"that{', so anyone can do anything' if anon.always else ''}",
                "add an identity criterion (domain, email, groups, claim/...) or "
                "`authenticated_user: true`",
            )
        ], True
    findings = []
    from_networks = reach(policy, Visitor(None, fixed_network=False), decide)
    if from_networks.some is not None:
        block = opening_block(policy, from_networks.some)
        assert block is not None
        condition = _condition(policy, Visitor(None, fixed_network=False), from_networks)
        findings.append(
            Finding(
                "warning",
                block.where,
                f"signed-out visitors get in {condition}: only the client address stands "
                "between them and the app",
                "make sure every address in those ranges is trusted (proxies and NAT share "
                "addresses), or add `authenticated_user: true`",
            )
        )
    preflight = reach(policy, Visitor(None, fixed_cors=False), decide)
    if preflight.some is not None:
        block = opening_block(policy, preflight.some)
        assert block is not None
        findings.append(
            Finding(
                "info",
                block.where,
                "CORS pre-flight requests (OPTIONS with Origin) reach the app without sign-in",
                "nothing to do if the app answers OPTIONS without side effects",
            )
        )
    return findings, False


def _stranger_findings(
    policy: CompiledPolicy, key: str, idp: PublicIdp, issuer: str
) -> list[Finding]:
    for stranger in strangers(idp):
        visitor = Visitor(stranger)
        result = reach(policy, visitor, decide)
        if result.some is None:
            continue
        block = opening_block(policy, result.some)
        assert block is not None
        condition = _condition(policy, visitor, result)
        if block.label == "allow_any_authenticated_user":
            message = (
                "logged-in users can do anything, and anyone can make an account at "
                f"{idp.name} ({issuer}): {idp.why}"
            )
        else:
            message = (
                f"anyone who makes an account at {idp.name} ({issuer}) gets in {condition} "
                f"(e.g. {stranger.email}): this rule checks nothing only your people have; "
                f"{idp.why}"
            )
        return [
            Finding(
                "error",
                block.where,
                message,
                "restrict the rule to your people: allowed_domains / `domain: {is: ...}` for "
                "a domain you own, `groups`, or `email: {in: [...]}`",
            )
        ]
    return []


def _dead_policy_findings(policy: CompiledPolicy, key: str) -> list[Finding]:
    if not policy.allows:
        return [
            Finding(
                "warning", key,
                "no policy and no allow_* option: nobody can get in",
                "add a policy, e.g. `allowed_domains: [example.com]`",
            )
        ]
    someone = (Visitor(None, False, False), Visitor(ANYONE, False, False))
    allow_results = [reach(policy, v, any_allow) for v in someone]
    if any(r.unknown for r in allow_results):
        return []
    if all(r.some is None for r in allow_results):
        return [
            Finding(
                "warning", f"{key}.policy",
                "no request can ever match an allow rule: nobody can get in",
                "fix the allow rules (look for `reject`, or `and` of exclusive criteria)",
            )
        ]
    decisions = [reach(policy, v, decide) for v in someone]
    if all(r.some is None for r in decisions):
        witness = next(r.some for r in allow_results if r.some is not None)
        deny = next(
            (d for d in policy.denies if evaluate(d, lambda n: witness[n.label])), None
        )
        return [
            Finding(
                "warning", deny.where if deny is not None else f"{key}.policy",
                "this deny matches whenever an allow does: nobody can get in",
                "narrow the deny rule, or remove it",
            )
        ]
    return []


def _method_case_findings(policy: CompiledPolicy) -> list[Finding]:
    findings = []
    for block in (*policy.allows, *policy.denies):
        for node in criteria(block):
            if node.name != "http_method":
                continue
            spec = node.spec if isinstance(node.spec, dict) else {"is": node.spec}
            values = [v for raw in spec.values() for v in (raw if isinstance(raw, list) else [raw])]
            lower = [v for v in values if isinstance(v, str) and v != v.upper()]
            if lower:
                findings.append(
                    Finding(
                        "warning", node.where,
                        f"HTTP methods are upper-case: {', '.join(map(repr, lower))} never "
                        "matches (as in Pomerium)",
                        f"write {', '.join(v.upper() for v in lower)}",
                    )
                )
    return findings


def _assertion_findings(cfg: RuntimeConfig, route: Route, key: str) -> list[Finding]:
    """A route whose app reads the assertion: what it will see (Jenkins' JWT Auth plugin by
    name when the route is recognisably Jenkins)."""
    findings = []
    host = route.from_host
    # the route's own jwt_issuer_format, else the global one
    iss = issuer_for(cfg.settings, route.jwt_issuer_format or cfg.settings.jwt_issuer_format)
    jenkins = is_jenkins(route)
    if jenkins and not route.pass_identity_headers:
        findings.append(
            Finding(
                "warning", f"{key}.pass_identity_headers",
                "this looks like the Jenkins route, but it sends no X-Pomerium-Jwt-Assertion: "
                "the JWT Auth plugin sees every request as anonymous",
                "set `pass_identity_headers: true`",
            )
        )
    origin = f"{'https' if cfg.settings.tls else 'http'}://{route.from_netloc}"
    jwks = f"{origin}/.well-known/pomerium/jwks.json"
    if jenkins:
        findings.append(
            Finding(
                "info", key,
                f"the Jenkins JWT Auth plugin will see iss={iss}, aud={host}, "
                "groups as a list, username and email in `email`",
                f"set acceptable issuers `{iss}`, acceptable audiences "
                f"`{host}`, JWKS URL {jwks}",
            )
        )
    else:
        findings.append(
            Finding(
                "info", key,
                "the app reading the assertion (X-Pomerium-Jwt-Assertion) will see "
                f"iss={iss}, aud={host}, groups as a list, the user's address "
                "in `email`",
                f"have it accept the issuer `{iss}` and the audience `{host}` "
                f"and verify with the keys at {jwks}",
            )
        )
    return findings


def _issuer_format_findings(cfg: RuntimeConfig, jenkins: bool, readers: bool) -> list[Finding]:
    """One finding for the whole config, however many routes read the assertion."""
    if cfg.settings.jwt_issuer_format != "uri" or not readers:
        return []
    if jenkins:
        return [
            Finding(
                "warning", "jwt_issuer_format",
                f"the assertion's iss is {cfg.assertion_issuer!r}, not the host name the "
                "Jenkins guide enters as the plugin's acceptable issuer",
                f"enter {cfg.assertion_issuer} as the plugin's acceptable issuer, or set "
                "jwt_issuer_format: host",
            )
        ]
    return [
        Finding(
            "info", "jwt_issuer_format",
            f"the assertion's iss is the URL {cfg.assertion_issuer!r}, not a bare host name",
            f"apps that check the issuer must expect exactly {cfg.assertion_issuer}",
        )
    ]


def _covers(first: Route, later: Route) -> bool:
    kind, value = first.match_key
    later_kind, later_value = later.match_key
    if kind != "prefix" or later_kind == "regex":
        return False
    return later_value.startswith(value)


def _order_findings(routes: list[Route]) -> list[Finding]:
    findings = []
    for j, later in enumerate(routes):
        for i, first in enumerate(routes[:j]):
            if first.from_netloc == later.from_netloc and _covers(first, later):
                kind, value = later.match_key
                findings.append(
                    Finding(
                        "warning", f"routes[{j}]",
                        f"never used: routes[{i}] (prefix {first.match_key[1]}) comes first and "
                        f"matches every path of this route ({kind} {value}); its policy never "
                        "applies",
                        f"move routes[{j}] above routes[{i}] (the first matching route wins)",
                    )
                )
                break
    return findings


# ---- groups without a groups claim ----------------------------------------------------------

_GROUP_CRITERIA = ("groups", "claim/groups")


def _groups_blocks(policy: CompiledPolicy) -> tuple[list[str], list[str]]:
    """The allow and deny rules (config keys) that read the user's groups."""

    def reading(blocks: tuple[Node, ...]) -> list[str]:
        return [b.where for b in blocks if any(n.name in _GROUP_CRITERIA for n in criteria(b))]

    return reading(policy.allows), reading(policy.denies)


def _groups_claim_findings(
    settings: Settings, allows: list[str], denies: list[str], user_info: str
) -> list[Finding]:
    """Rules on `groups` when nothing asks the IdP for groups: the claim is empty, so they
    never match (a deny on groups then refuses nobody)."""
    rules = [*allows, *denies]
    if not rules or any("group" in scope.lower() for scope in settings.idp_scopes):
        return []
    if settings.idp_provider == "gitlab" or (
        settings.idp_provider == "github" and "read:org" in settings.idp_scopes
    ):
        return []  # groups come without a `groups` scope (GitLab's userinfo, GitHub's teams)
    named = ", ".join(rules[:3]) + (f" and {len(rules) - 3} more" if len(rules) > 3 else "")
    effects = []
    if allows:
        effects.append("the allow rules on groups never match")
    if denies:
        effects.append("the deny rules on groups never refuse anyone")
    effect = " and ".join(effects)
    host = (urlsplit(settings.idp_provider_url).hostname or "").lower()
    if host in _MICROSOFT_HOSTS:
        return [
            Finding(
                "info", "idp_scopes",
                f"rules on `groups` ({named}): Microsoft Entra ID sends a `groups` claim "
                "(group object IDs) only when the app registration asks for it, there is no "
                f"`groups` scope; without it {effect}",
                "add the groups claim to the app registration (Token configuration, Add groups "
                f"claim) and match group object IDs; sign in again and look for `groups` at "
                f"{user_info}",
            )
        ]
    if host == "accounts.google.com":
        return [
            Finding(
                "warning", rules[0],
                f"rules on `groups` ({named}) never see a group: Google's ID tokens carry no "
                f"`groups` claim, so {effect}",
                "use `domain` or `email` criteria instead: Google Workspace groups are not part "
                "of the sign-in",
            )
        ]
    return [
        Finding(
            "warning", "idp_scopes",
            f"rules on `groups` ({named}) will likely never see a group: idp_scopes "
            f"({' '.join(settings.idp_scopes)}) asks for no `groups` scope, and with "
            f"idp_provider {settings.idp_provider} the `groups` claim is then most likely "
            f"empty, so {effect}",
            "add `groups` to idp_scopes (or the scope or claim mapping your IdP uses for "
            f"groups), sign in again and check that `groups` is listed at {user_info}",
        )
    ]


# ---- upstreams that cannot be reached -------------------------------------------------------

RESOLVE_TIMEOUT_S = 2.0  # per name; the names are looked up in parallel
RESOLVE_BUDGET_S = 10.0  # for all names together
_RESOLVE_PARALLEL = 16

Resolver = Callable[[str, int], object]


def _getaddrinfo(host: str, port: int) -> object:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def resolve_names(
    names: dict[str, int],
    timeout: float = RESOLVE_TIMEOUT_S,
    budget: float = RESOLVE_BUDGET_S,
    resolver: Resolver = _getaddrinfo,
) -> dict[str, str]:
    """name -> "ok", "unresolved" or "timeout", looking names up in daemon threads so a hung
    resolver never holds up `check` or a start-up (nor the exit) for more than the bound.
    Names left when the budget is spent are not in the answer."""
    results: dict[str, str] = {}

    def lookup(name: str, port: int) -> None:
        try:
            resolver(name, port)
        except (OSError, UnicodeError):
            results[name] = "unresolved"
        else:
            results[name] = "ok"

    pending = list(names.items())
    end = time.monotonic() + budget
    answer: dict[str, str] = {}
    while pending and time.monotonic() < end:
        batch, pending = pending[:_RESOLVE_PARALLEL], pending[_RESOLVE_PARALLEL:]
        threads = [
            threading.Thread(target=lookup, args=item, name=f"resolve {item[0]}", daemon=True)
            for item in batch
        ]
        for thread in threads:
            thread.start()
        deadline = min(end, time.monotonic() + timeout)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for name, _port in batch:
            answer[name] = results.get(name, "timeout")
    return answer


def _route_names(settings: Settings, indexes: list[int]) -> str:
    return ", ".join(f"routes[{i}] ({settings.routes[i].from_})" for i in indexes)


def upstream_findings(
    settings: Settings,
    timeout: float = RESOLVE_TIMEOUT_S,
    resolver: Resolver = _getaddrinfo,
) -> list[Finding]:
    """Upstream host names in `to` that do not resolve here (a warning, one per name) and Unix
    sockets that do not exist yet (an info: the app may start later)."""
    names: dict[str, list[int]] = {}  # host name -> the routes sending to it
    ports: dict[str, int] = {}
    sockets: dict[str, list[int]] = {}  # socket path -> the routes sending to it
    for index, route in enumerate(settings.routes):
        for upstream in route.upstreams:
            if upstream.scheme == "unix":
                users = sockets.setdefault(upstream.path, [])
            elif not is_ip_literal(upstream.host):
                users = names.setdefault(upstream.host, [])
                ports.setdefault(upstream.host, upstream.port)
            else:
                continue
            if index not in users:
                users.append(index)
    resolved = resolve_names(ports, timeout=timeout, resolver=resolver) if ports else {}
    findings = []
    for name, routes in names.items():
        status = resolved.get(name, "ok")
        if status == "ok":
            continue
        alone = any(
            all(
                u.scheme != "unix"
                and not is_ip_literal(u.host)
                and resolved.get(u.host, "ok") != "ok"
                for u in settings.routes[i].upstreams
            )
            for i in routes
        )
        what = (
            "does not resolve" if status == "unresolved"
            else f"got no DNS answer within {timeout:g} s"
        )
        effect = (
            "after sign-in users would see Envoy's 'no healthy upstream'" if alone
            else "Envoy sends the requests only to the route's other upstreams"
        )
        findings.append(
            Finding(
                "warning", f"routes[{routes[0]}].to",
                f"upstream host {name!r} of {_route_names(settings, routes)} {what} "
                f"here: {effect}",
                "correct the host name in `to`, or make it resolvable where Envoy runs; a "
                "docker compose service name resolves only inside its compose network",
            )
        )
    for path, routes in sockets.items():
        try:
            mode = Path(path).stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            what = "does not exist (yet)"
        except OSError as exc:
            what = f"cannot be checked ({exc.strerror or exc})"
        else:
            if stat.S_ISSOCK(mode):
                continue
            what = "is not a socket"
        findings.append(
            Finding(
                "info", f"routes[{routes[0]}].to",
                f"the Unix socket {path} of {_route_names(settings, routes)} {what}: "
                "until the app listens there, Envoy answers 503",
                "nothing to do if the app creates it when it starts; otherwise correct the "
                "path in `to`",
            )
        )
    return findings


def startup_warnings(settings: Settings) -> list[str]:
    """The upstream findings as lines for stderr at the start of `authgate run` / `authz`."""
    return [f"authgate: {finding.line()}" for finding in upstream_findings(settings)]


# ---- secrets and the server ----------------------------------------------------------------


def secret_weakness(raw: bytes) -> tuple[str, str] | None:
    """(severity, why) when `raw` does not look like random bytes."""
    if not raw:
        return "error", "is empty"
    if len(set(raw)) == 1:
        return "error", f"is {len(raw)} copies of the byte 0x{raw[0]:02x}"
    for period in range(2, len(raw) // 2 + 1):
        if all(raw[i] == raw[i % period] for i in range(len(raw))):
            return "error", f"repeats a {period}-byte pattern"
    distinct = len(set(raw))
    if distinct < len(raw) // 3:
        return "error", f"has only {distinct} distinct byte values in {len(raw)}"
    if all(0x20 <= b < 0x7F for b in raw):
        return "warning", "is printable text, not random bytes (a typed password?)"
    counts = [raw.count(b) for b in set(raw)]
    entropy = -sum(c / len(raw) * math.log2(c / len(raw)) for c in counts)
    if entropy < 3.5:
        return "error", f"has low entropy ({entropy:.1f} bits per byte)"
    return None


def _secret_findings(settings: Settings, jenkins: bool, readers: bool) -> list[Finding]:
    findings = []
    keygen = "generate one with `authgate keygen --cookie-secret`"
    if settings.cookie_secret is None:
        findings.append(
            Finding(
                "warning", "cookie_secret",
                "not set: a random one is made at every start, so every restart signs "
                "everyone out (and several workers would not share sessions)",
                keygen,
            )
        )
    else:
        weak = secret_weakness(decode_base64(settings.cookie_secret))
        if weak is not None:
            findings.append(
                Finding(
                    weak[0], "cookie_secret",
                    f"{weak[1]}: whoever guesses it can forge a session for any user",
                    keygen,
                )
            )
    if settings.signing_key is None:
        if jenkins:
            extra = (
                "; the Jenkins JWT Auth plugin caches the JWKS, so after a restart it refuses "
                "every assertion until its cache expires"
            )
        elif readers:
            extra = (
                "; an app that reads the assertion and caches the JWKS refuses every assertion "
                "after a restart until it fetches the keys again"
            )
        else:
            extra = ""
        findings.append(
            Finding(
                "warning", "signing_key",
                f"not set: a new assertion signing key is made at every start{extra}",
                "generate one with `authgate keygen` and set signing_key",
            )
        )
    secrets = {
        name: value
        for name in ("cookie_secret", "idp_client_secret", "signing_key", "shared_secret")
        if isinstance(value := getattr(settings, name, None), str) and value
    }
    seen: dict[bytes, str] = {}
    for name, value in secrets.items():
        forms = {value.strip().encode()}
        with contextlib.suppress(ValueError):
            forms.add(decode_base64(value))
        earlier = next((seen[f] for f in forms if f in seen), None)
        if earlier is not None:
            findings.append(
                Finding(
                    "error", name,
                    f"is the same secret as {earlier}: whoever knows one (e.g. the IdP's "
                    "admins know the client secret) knows both",
                    "give every secret its own random value",
                )
            )
        for form in forms:
            seen.setdefault(form, name)
    return findings


def _is_loopback(host: str) -> bool:
    return host == "localhost" or host == "::1" or host.startswith("127.")


def _server_findings(settings: Settings) -> list[Finding]:
    if settings.insecure_server and settings.tls and not _is_loopback(settings.listen_host):
        return [
            Finding(
                "info", "insecure_server",
                f"plain HTTP on {settings.address} behind a TLS-terminating balancer (https "
                "routes): session cookies and assertions cross the balancer-to-authgate hop "
                "unencrypted",
                "keep that hop on a network only the balancer reaches, and set "
                "xff_num_trusted_hops so source_ip sees clients, not the balancer",
            )
        ]
    if settings.insecure_server and not _is_loopback(settings.listen_host):
        return [
            Finding(
                "warning", "insecure_server",
                f"plain HTTP on {settings.address}: session cookies and assertions cross the "
                "network unencrypted",
                "listen on 127.0.0.1 behind a TLS-terminating proxy, or set certificate_file "
                "and certificate_key_file",
            )
        ]
    return []


# ---- all together --------------------------------------------------------------------------


def check_config(cfg: RuntimeConfig, *, upstreams: bool = True) -> list[Finding]:
    """Every finding, errors first. `upstreams`: also look up the upstream host names (bounded
    by RESOLVE_TIMEOUT_S) and look for the Unix sockets."""
    settings = cfg.settings
    idp = public_idp(settings.idp_provider_url)
    findings: list[Finding] = []
    any_jenkins = any_reader = False
    group_allows: list[str] = []
    group_denies: list[str] = []
    user_info = ""
    for index, route in enumerate(settings.routes):
        key = f"routes[{index}]"
        jenkins = is_jenkins(route)
        reader = reads_assertion(route)
        any_jenkins = any_jenkins or jenkins
        any_reader = any_reader or reader
        policy = route_policy(route, key)
        signed_out, open_to_all = _signed_out_findings(policy, key, jenkins, strict=reader)
        findings += signed_out
        if idp is not None and not open_to_all:
            findings += _stranger_findings(policy, key, idp, settings.idp_provider_url)
        findings += _dead_policy_findings(policy, key)
        findings += _method_case_findings(policy)
        allows, denies = _groups_blocks(policy)
        if (allows or denies) and not user_info:
            user_info = f"{'https' if settings.tls else 'http'}://{route.from_netloc}/.pomerium/"
        group_allows += allows
        group_denies += denies
        if reader:
            findings += _assertion_findings(cfg, route, key)
        if getattr(route, "show_error_details", False):
            findings.append(
                Finding(
                    "info", f"{key}.show_error_details",
                    "denied users see which rule refused them, including the domains, groups "
                    "and addresses the policy names",
                    "turn it off once the policy works",
                )
            )
    findings += _issuer_format_findings(cfg, any_jenkins, any_reader)
    findings += _groups_claim_findings(settings, group_allows, group_denies, user_info)
    findings += _order_findings(list(settings.routes))
    findings += _secret_findings(settings, any_jenkins, any_reader)
    findings += _server_findings(settings)
    if upstreams:
        findings += upstream_findings(settings)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: order[f.severity])
