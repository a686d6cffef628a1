"""`authgate verify`: check an assertion from the command line.

Exit 0 with the claims as JSON on stdout; 1 with the reason on stderr when the token is not
valid (or the keys cannot be fetched); 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from authgate.verify.verifier import MAX_LEEWAY_S, AssertionVerifier, InvalidAssertion

PROG = "authgate verify"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--jwks",
        metavar="URL",
        help="the JWKS, e.g. https://app.example.com/.well-known/pomerium/jwks.json",
    )
    source.add_argument(
        "--issuer-discovery",
        action="store_true",
        help="find the JWKS in <issuer>/.well-known/openid-configuration (--issuer a URL)",
    )
    parser.add_argument(
        "--issuer",
        action="append",
        required=True,
        metavar="ISS",
        help="an accepted iss (repeatable)",
    )
    parser.add_argument(
        "--audience",
        action="append",
        required=True,
        metavar="AUD",
        help="an accepted aud, the app's host (repeatable)",
    )
    parser.add_argument("--ca-file", metavar="PEM", help="CA certificates to trust for the JWKS")
    parser.add_argument(
        "--leeway",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help=f"clock skew allowed for exp/nbf/iat (at most {MAX_LEEWAY_S:g})",
    )
    parser.add_argument(
        "--allow-http",
        action="store_true",
        help="accept a plain-http JWKS on a host other than loopback",
    )
    parser.add_argument("token", metavar="TOKEN|-", help="the assertion, or - to read stdin")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Verify an authgate/Pomerium assertion (ES256 JWT)."
    )
    add_arguments(parser)
    return parser


def register(sub: Any) -> argparse.ArgumentParser:
    """Adds `verify` to the subparsers `sub` (from ArgumentParser.add_subparsers)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "verify",
        help="verify an assertion (X-Pomerium-Jwt-Assertion) against a JWKS",
        description="Verify an authgate/Pomerium assertion (ES256 JWT). Exit 0 and the "
        "claims as JSON; 1 and the reason when invalid; 2 on a usage error.",
    )
    add_arguments(parser)
    parser.set_defaults(func=cmd_verify)
    return parser


class _Usage(Exception):
    pass


def _read_token(arg: str) -> str:
    if arg != "-":
        return arg
    try:
        data = (
            sys.stdin.buffer.read(1024 * 1024)
            if hasattr(sys.stdin, "buffer")
            else (sys.stdin.read(1024 * 1024).encode())
        )
        text = data.decode("ascii")
    except (OSError, UnicodeError, ValueError) as exc:
        raise _Usage(f"cannot read the token from stdin: {exc}") from exc
    token = text.strip()
    if not token:
        raise _Usage("no token on stdin")
    return token


def _verifier(args: argparse.Namespace) -> AssertionVerifier:
    if not 0 <= args.leeway <= MAX_LEEWAY_S:
        raise _Usage(f"--leeway must be between 0 and {MAX_LEEWAY_S:g}")
    tls: bool | str = True
    if args.ca_file:
        try:
            ssl.create_default_context(cafile=args.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise _Usage(f"cannot read --ca-file {args.ca_file}: {exc}") from exc
        tls = args.ca_file
    common: dict[str, Any] = {
        "audience": args.audience,
        "leeway_s": args.leeway,
        "verify_tls": tls,
        "allow_http": args.allow_http,
        "min_refetch_s": 0,
    }
    try:
        if args.issuer_discovery:
            if len(args.issuer) != 1 or urlsplit(args.issuer[0]).scheme not in ("http", "https"):
                raise _Usage("--issuer-discovery needs exactly one --issuer, a URL")
            return AssertionVerifier.from_issuer_discovery(args.issuer[0], **common)
        return AssertionVerifier(args.jwks, issuer=args.issuer, **common)
    except ValueError as exc:
        raise _Usage(str(exc)) from exc


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        token = _read_token(args.token)
        verifier = _verifier(args)
    except _Usage as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except InvalidAssertion as exc:  # discovery failed
        print(f"{PROG}: cannot verify: {exc.reason}", file=sys.stderr)
        return 1
    with verifier:
        try:
            ident = verifier.verify(token)
        except InvalidAssertion as exc:
            print(f"{PROG}: invalid: {exc.reason}", file=sys.stderr)
            return 1
    json.dump(dict(ident.claims), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`authgate verify` on its own: main(["--jwks", URL, "--issuer", ..., TOKEN])."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on a usage error, 0 for --help
        return exc.code if isinstance(exc.code, int) else 2
    return cmd_verify(args)
