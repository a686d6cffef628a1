"""Command line: `authgate run | authz | sessions | login | logout | envoy-config | keygen |
signing-key | issuer | check | doctor | verify | explain`."""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from authgate import __version__
from authgate.errors import ConfigError

DEFAULT_AUTHZ_LISTEN = "127.0.0.1:9191"
_METRICS_HELP = "host:port for /metrics, /healthz, /readyz (overrides metrics_address)"


def _load(path: str, warn: bool = True):  # type: ignore[no-untyped-def]
    from authgate.config import build_runtime, load_settings

    return build_runtime(load_settings(path), warn=warn)


def cmd_run(args: argparse.Namespace) -> int:
    from authgate.runner import run

    return run(
        Path(args.config),
        workers=args.workers,
        runtime_dir=args.runtime_dir,
        envoy_log_level=args.envoy_log_level,
        metrics_address=args.metrics_address,
    )


def cmd_authz(args: argparse.Namespace) -> int:
    from authgate.authz.server import run_server

    cfg = _load(args.config)
    try:
        _serve_ops(args, cfg.settings.metrics_address)
    except (OSError, ValueError) as exc:
        print(f"authgate authz: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    if not args.no_upstream_check:
        from authgate.check import startup_warnings

        for line in startup_warnings(cfg.settings):
            print(line, file=sys.stderr, flush=True)
    run_server(
        cfg,
        args.listen,
        Path(args.ready_file) if args.ready_file else None,
        shared_dir=Path(args.shared_dir) if args.shared_dir else None,
    )
    return 0


def _serve_ops(args: argparse.Namespace, configured: str | None) -> None:
    """`authgate authz` alone serves /metrics, /healthz, /readyz itself; a worker of
    `authgate run` leaves that to its supervisor."""
    from authgate.ops.service import start_standalone, supervised

    address = args.metrics_address or configured
    if address and not supervised():
        start_standalone(address, args.listen)


def _sessions_store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from authgate.authz.state import session_store_for

    cfg = _load(args.config, warn=False)
    if args.shared_dir:
        place: Path | None = Path(args.shared_dir)
    else:
        place = Path(args.runtime_dir) / "shared" if args.runtime_dir else None
    return session_store_for(cfg, place, timeout_s=10.0)


def cmd_sessions(args: argparse.Namespace) -> int:
    """List or revoke sessions in the store the servers use (what an admin does when someone
    leaves): a revoked session stops working on every worker and replica within about a second."""
    import asyncio
    from datetime import UTC, datetime

    from authgate.session.store import StoreUnavailable

    async def go() -> int:
        store = _sessions_store(args)
        try:
            if args.action == "list":
                for record in await store.list_sessions(args.user):
                    seen, ends = (
                        datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%MZ")
                        for t in (record.last_seen, record.expires_at)
                    )
                    who = record.email or record.user
                    print(f"{record.sid}  {who}  last seen {seen}  ends {ends}")
                return 0
            if args.id:
                revoked = [args.id] if await store.revoke(args.id) else []
            else:
                revoked = await store.revoke_user(args.user)
            print(f"revoked {len(revoked)} session(s)")
            return 0 if revoked else 1
        except StoreUnavailable as exc:
            print(f"authgate: the session store is unavailable: {exc}", file=sys.stderr)
            return 3
        finally:
            await store.close()

    return asyncio.run(go())


def cmd_envoy_config(args: argparse.Namespace) -> int:
    from authgate.envoy.bootstrap import build_bootstrap, render_yaml

    cfg = _load(args.config, warn=False)
    doc = build_bootstrap(cfg, args.authz or [DEFAULT_AUTHZ_LISTEN], admin_address=args.admin)
    sys.stdout.write(
        json.dumps(doc, indent=2) + "\n" if args.format == "json" else render_yaml(doc)
    )
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from authgate.config.runtime import generate_cookie_secret, generate_signing_key_b64

    print(generate_cookie_secret() if args.cookie_secret else generate_signing_key_b64())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from authgate.check import check_config, exit_code, render

    findings = check_config(_load(args.config, warn=False))
    sys.stdout.write(render(findings, args.format))
    return exit_code(findings)


def cmd_explain(args: argparse.Namespace) -> int:
    from authgate.explain import explain_request, load_claims, parse_at, parse_headers

    cfg = _load(args.config, warn=False)
    result = explain_request(
        cfg,
        args.url,
        method=args.method,
        identity=load_claims(args.claims) if args.claims else None,
        at=parse_at(args.at) if args.at else None,
        source_ip=args.source_ip,
        headers=parse_headers(args.header or []),
    )
    sys.stdout.write(result.json() if args.format == "json" else result.text())
    return result.exit_code


def cmd_login(args: argparse.Namespace) -> int:
    from authgate.login_cli import LoginError, UsageError, login, open_in_browser

    try:
        token = login(
            args.url,
            open_browser=None if args.no_browser else open_in_browser,
            port=args.port,
            ca_file=args.ca_file,
            timeout=args.timeout,
        )
    except UsageError as exc:
        print(f"authgate login: {exc}", file=sys.stderr)
        return 2
    except LoginError as exc:
        print(f"authgate login: {exc}", file=sys.stderr)
        return 1
    print(token)  # alone on stdout, for $(authgate login ...)
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from authgate.login_cli import UsageError, logout

    try:
        logout(args.url)
    except UsageError as exc:
        print(f"authgate logout: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authgate",
        description="Identity-aware proxy: Envoy in front, authgate's ext_authz server deciding.",
    )
    parser.add_argument("--version", action="version", version=f"authgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start Envoy and the authz workers together")
    run.add_argument("-c", "--config", required=True, help="config.yaml (Pomerium format)")
    run.add_argument("--workers", type=int, default=1, help="authz worker processes (default 1)")
    run.add_argument(
        "--runtime-dir",
        default=None,
        help="where sockets and the generated Envoy config go (default: a temp dir)",
    )
    run.add_argument(
        "--envoy-log-level",
        default=None,
        help="Envoy's --log-level (default: proxy_log_level, else log_level, else warning)",
    )
    run.add_argument("--metrics-address", default=None, help=_METRICS_HELP)
    run.set_defaults(func=cmd_run)

    authz = sub.add_parser(
        "authz", help="run only the ext_authz gRPC server (Envoy runs elsewhere)"
    )
    authz.add_argument("-c", "--config", required=True)
    authz.add_argument(
        "--listen",
        default=DEFAULT_AUTHZ_LISTEN,
        help=f"unix:/path.sock or host:port (default {DEFAULT_AUTHZ_LISTEN})",
    )
    authz.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    authz.add_argument("--metrics-address", default=None, help=_METRICS_HELP)
    authz.add_argument(
        "--shared-dir",
        default=None,
        help="a directory shared by the workers on one host: the embedded session store lives "
        "there unless databroker_storage_connection_string says otherwise (default: "
        "$STATE_DIRECTORY or ~/.local/state/authgate)",
    )
    # `authgate run` starts its workers with this: it has printed the upstream warnings itself.
    authz.add_argument("--no-upstream-check", action="store_true", help=argparse.SUPPRESS)
    authz.set_defaults(func=cmd_authz)

    sessions = sub.add_parser("sessions", help="list or revoke signed-in sessions")
    sessions_sub = sessions.add_subparsers(dest="action", required=True)
    for action, text in (("list", "list live sessions"), ("revoke", "end sessions everywhere")):
        one = sessions_sub.add_parser(action, help=text)
        one.add_argument("-c", "--config", required=True)
        place = one.add_mutually_exclusive_group()
        place.add_argument(
            "--runtime-dir", default=None, help="`authgate run`'s --runtime-dir (embedded store)"
        )
        place.add_argument(
            "--shared-dir", default=None, help="`authgate authz`'s --shared-dir (embedded store)"
        )
        if action == "list":
            one.add_argument("--user", default=None, help="only this user's sessions (email)")
        else:
            who = one.add_mutually_exclusive_group(required=True)
            who.add_argument("--user", default=None, help="every session of this user (email)")
            who.add_argument("--id", default=None, help="one session, by id")
        one.set_defaults(func=cmd_sessions)

    env = sub.add_parser("envoy-config", help="print the Envoy bootstrap generated from the config")
    env.add_argument("-c", "--config", required=True)
    env.add_argument(
        "--authz",
        action="append",
        metavar="ENDPOINT",
        help=f"authz endpoint(s): unix:/path.sock or host:port "
        f"(default {DEFAULT_AUTHZ_LISTEN}); repeat for several workers",
    )
    env.add_argument("--admin", default="127.0.0.1:9901", help="Envoy admin address")
    env.add_argument("--format", choices=("yaml", "json"), default="yaml")
    env.set_defaults(func=cmd_envoy_config)

    keygen = sub.add_parser("keygen", help="print a new signing_key (base64 of an EC P-256 PEM)")
    keygen.add_argument(
        "--cookie-secret",
        action="store_true",
        help="print a new cookie_secret (base64 of 32 random bytes) instead",
    )
    keygen.set_defaults(func=cmd_keygen)

    check = sub.add_parser(
        "check",
        help="lint the config for access-control mistakes "
        "(exit 0 clean, 1 warnings, 2 errors)",
    )
    check.add_argument("-c", "--config", required=True)
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.set_defaults(func=cmd_check)

    from authgate.doctor import register as register_doctor
    from authgate.issuer_cli import register as register_issuer
    from authgate.verify.cli import register as register_verify

    register_doctor(sub)
    register_issuer(sub)
    register_verify(sub)

    explain = sub.add_parser(
        "explain",
        help="show the route a request reaches and why its policy allows or denies it "
        "(exit 0 allowed, 1 denied)",
    )
    explain.add_argument("-c", "--config", required=True)
    explain.add_argument("--url", required=True, help="the full URL, e.g. https://jenkins.test/job/x")
    explain.add_argument("--method", default="GET")
    explain.add_argument(
        "--claims", default=None, help="a JSON file of ID-token claims; without it: signed out"
    )
    explain.add_argument(
        "--at", default=None, help="the request time, ISO-8601 (default: now; naive = UTC)"
    )
    explain.add_argument("--source-ip", default="", help="the client address")
    explain.add_argument(
        "--header", action="append", metavar="'NAME: VALUE'", help="a request header; repeat"
    )
    explain.add_argument("--format", choices=("text", "json"), default="text")
    explain.set_defaults(func=cmd_explain)

    login = sub.add_parser(
        "login",
        help="sign in for a script: print a token for `X-Pomerium-Authorization: Pomerium <token>`",
        description="Sign in to a route in a browser (Pomerium's programmatic login) and print "
        'a token for it on stdout, e.g. curl -H "X-Pomerium-Authorization: Pomerium '
        '$(authgate login https://app.example.com)" https://app.example.com/. The token works '
        "on that host only and is saved per origin until it stops working. Exit 0 signed in, "
        "1 the login failed or timed out, 2 a bad command line. Signing out (which ends the "
        "session and its tokens) is done in the browser: <origin>/.pomerium/sign_out; "
        "`authgate logout` only forgets the saved token.",
    )
    login.add_argument("url", help="a URL on the route, e.g. https://jenkins.example.com")
    login.add_argument(
        "--no-browser",
        action="store_true",
        help="only print the sign-in URL (on stderr), to open in a browser on this machine "
        "(it comes back to 127.0.0.1)",
    )
    login.add_argument(
        "--port",
        type=int,
        default=0,
        help="the local port for the browser's return (default: a free one)",
    )
    login.add_argument("--ca-file", default=None, help="a PEM CA bundle for a private CA")
    login.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the sign-in (default 300)"
    )
    login.set_defaults(func=cmd_login)

    logout = sub.add_parser(
        "logout",
        help="forget the token `authgate login` saved for a route",
        description="Forget the token saved for the route's origin, on this machine. The session "
        "itself stays signed in until you sign out in the browser (<origin>/.pomerium/sign_out), "
        "which also ends every token from it.",
    )
    logout.add_argument("url", help="a URL on the route, e.g. https://jenkins.example.com")
    logout.set_defaults(func=cmd_logout)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"authgate: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
