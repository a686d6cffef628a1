"""`authgate check`: lint a config for the access-control mistakes that open an app to people it
was not meant for (Jenkins' own documentation warns about most of them).

Each finding has a severity — `error` when anyone (signed out, or anyone who can make an account
at a public identity provider) can get in; `warning` for everything else that is probably wrong;
`info` for facts worth knowing — the config key it is about, what is wrong and the fix.
Exit status: 0 with no errors or warnings, 1 with warnings only, 2 with errors.
"""

import contextlib
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from authgate.config import Route, RuntimeConfig, Settings
from authgate.config.schema import decode_base64
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


_MICROSOFT = PublicIdp("Microsoft", ("outlook.com", "hotmail.com"))
_PUBLIC_HOSTS = {
    "accounts.google.com": PublicIdp("Google", ("gmail.com",)),
    "github.com": PublicIdp("GitHub", ("users.noreply.github.com",)),
    "api.github.com": PublicIdp("GitHub", ("users.noreply.github.com",)),
    "gitlab.com": PublicIdp("GitLab.com", ("gitlab.com",)),
    "login.live.com": _MICROSOFT,
    "appleid.apple.com": PublicIdp("Apple", ("privaterelay.appleid.com",)),
    "www.facebook.com": PublicIdp("Facebook", ("facebook.com",)),
    "facebook.com": PublicIdp("Facebook", ("facebook.com",)),
    "bitbucket.org": PublicIdp("Bitbucket", ("bitbucket.org",)),
}
# login.microsoftonline.com is public only for the multi-tenant endpoints.
_MICROSOFT_OPEN_TENANTS = (
    "common",
    "consumers",
    "organizations",
    "9188040d-6c67-4c5b-b112-36a304b66dad",  # the personal-accounts tenant
)


def public_idp(issuer_url: str) -> PublicIdp | None:
    parts = urlsplit(issuer_url)
    host = (parts.hostname or "").lower()
    if host == "login.microsoftonline.com":
        tenant = parts.path.strip("/").partition("/")[0].lower()
        return _MICROSOFT if tenant in _MICROSOFT_OPEN_TENANTS else None
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
    """The heuristic for "this is the Jenkins route": its name says so, or it passes identity
    headers (which only an app reading the assertion, like Jenkins' JWT Auth plugin, needs)."""
    names = [route.from_, *route.to, route.id or "", route.name or ""]
    return route.pass_identity_headers or any("jenkins" in n.lower() for n in names)


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
    policy: CompiledPolicy, key: str, jenkins: bool
) -> tuple[list[Finding], bool]:
    """Findings about signed-out visitors; True when they can get in from anywhere."""
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
                    "error" if jenkins else "warning",
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
                    "error" if jenkins else "warning",
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
                f"{idp.name} ({issuer})"
            )
        else:
            message = (
                f"anyone who makes an account at {idp.name} ({issuer}) gets in {condition} "
                f"(e.g. {stranger.email}): this rule checks nothing only your people have"
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


def _jenkins_findings(cfg: RuntimeConfig, route: Route, key: str) -> list[Finding]:
    findings = []
    host = route.from_host
    if not route.pass_identity_headers:
        findings.append(
            Finding(
                "warning", f"{key}.pass_identity_headers",
                "this looks like the Jenkins route, but it sends no X-Pomerium-Jwt-Assertion: "
                "the JWT Auth plugin sees every request as anonymous",
                "set `pass_identity_headers: true`",
            )
        )
    if cfg.settings.jwt_issuer_format == "uri":
        findings.append(
            Finding(
                "warning", "jwt_issuer_format",
                f"the assertion's iss is {cfg.assertion_issuer!r}, not the host name the "
                "Jenkins guide enters as the plugin's acceptable issuer",
                f"enter {cfg.assertion_issuer} as the plugin's acceptable issuer, or set "
                "jwt_issuer_format: host",
            )
        )
    origin = f"{'https' if cfg.settings.tls else 'http'}://{route.from_netloc}"
    findings.append(
        Finding(
            "info", key,
            f"the Jenkins JWT Auth plugin will see iss={cfg.assertion_issuer}, aud={host}, "
            "groups as a list, username and email in `email`",
            f"set acceptable issuers `{cfg.assertion_issuer}`, acceptable audiences `{host}`, "
            f"JWKS URL {origin}/.well-known/pomerium/jwks.json",
        )
    )
    return findings


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


def _secret_findings(settings: Settings, jenkins: bool) -> list[Finding]:
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
        extra = (
            "; the Jenkins JWT Auth plugin caches the JWKS, so after a restart it refuses "
            "every assertion until its cache expires" if jenkins else ""
        )
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


def check_config(cfg: RuntimeConfig) -> list[Finding]:
    settings = cfg.settings
    idp = public_idp(settings.idp_provider_url)
    findings: list[Finding] = []
    any_jenkins = False
    for index, route in enumerate(settings.routes):
        key = f"routes[{index}]"
        jenkins = is_jenkins(route)
        any_jenkins = any_jenkins or jenkins
        policy = route_policy(route, key)
        signed_out, open_to_all = _signed_out_findings(policy, key, jenkins)
        findings += signed_out
        if idp is not None and not open_to_all:
            findings += _stranger_findings(policy, key, idp, settings.idp_provider_url)
        findings += _dead_policy_findings(policy, key)
        findings += _method_case_findings(policy)
        if jenkins:
            findings += _jenkins_findings(cfg, route, key)
        if getattr(route, "show_error_details", False):
            findings.append(
                Finding(
                    "info", f"{key}.show_error_details",
                    "denied users see which rule refused them, including the domains, groups "
                    "and addresses the policy names",
                    "turn it off once the policy works",
                )
            )
    findings += _order_findings(list(settings.routes))
    findings += _secret_findings(settings, any_jenkins)
    findings += _server_findings(settings)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: order[f.severity])
