"""`authgate signing-key rotate|promote|retire` and `authgate issuer export`.

Key rotation, Pomerium's way: `signing_key` holds several PEM keys; the first signs and all are
published in the JWKS. Publish a new key second (`rotate`), wait for verifiers' JWKS caches,
move it first (`promote`), then drop the old one once its assertions have expired (`retire`).
"""

import argparse
import sys
from pathlib import Path

from authgate.assertion import keys as keyring
from authgate.config.schema import decode_base64, parse_signing_keys
from authgate.contract import JWKS_PATH, OIDC_DISCOVERY_PATH
from authgate.errors import ConfigError


def read_current(current: str) -> list[bytes]:
    """The PEM blocks of CURRENT: a signing_key value (base64 of PEM), a file holding PEM or
    that value, or `-` for standard input. Every key is checked (ConfigError names the bad one)."""
    text: str | bytes = current
    if current == "-":
        text = sys.stdin.buffer.read()
    elif "\n" not in current and len(current) < 4096:
        path = Path(current)
        try:
            if path.is_file():
                text = path.read_bytes()
        except (OSError, ValueError):
            pass
    raw = text if isinstance(text, bytes) else text.encode()
    if b"-----BEGIN" in raw:
        pem = raw
    else:
        try:
            pem = decode_base64(raw.decode("ascii", errors="replace"))
        except ValueError:
            raise ConfigError(
                "signing_key",
                "CURRENT is neither a PEM file nor base64 of PEM",
                "give the signing_key value, or the path of the PEM file",
            ) from None
    try:
        parse_signing_keys(pem)
    except ValueError as exc:
        raise ConfigError("signing_key", str(exc)) from None
    return keyring.split_pem_blocks(pem)


def rotated(current: str) -> list[bytes]:
    """Step 1 (publish): CURRENT's keys, then a new one."""
    return keyring.rotate(read_current(current))


def promoted(current: str) -> list[bytes]:
    """Step 2 (switch): the last key first."""
    try:
        return keyring.promote(read_current(current))
    except ValueError as exc:
        raise ConfigError("signing_key", str(exc)) from None


def retired(current: str) -> list[bytes]:
    """Step 3 (retire): the first key only."""
    return keyring.retire(read_current(current))


STEPS = {"rotate": rotated, "promote": promoted, "retire": retired}


def signing_key_value(step: str, current: str, pem: bool = False) -> str:
    """The new signing_key value after `step` (base64 of PEM; the PEM itself with `pem`).
    For wiring into other commands (e.g. `keygen --rotate CURRENT`)."""
    blocks = STEPS[step](current)
    return b"".join(blocks).decode() if pem else keyring.encode_keys(blocks)


def cmd_signing_key(args: argparse.Namespace) -> int:
    value = signing_key_value(args.step, args.current, pem=args.pem)
    sys.stdout.write(value if value.endswith("\n") else value + "\n")
    return 0


def export_files(config: str, directory: Path, jwks_only: bool = False) -> list[Path]:
    """Write the issuer's documents, byte for byte as served, under `directory`."""
    from authgate.authz.route_endpoints import oidc_discovery_json
    from authgate.config import build_runtime, load_settings

    settings = load_settings(config)
    if settings.signing_key is None:
        raise ConfigError(
            "signing_key",
            "is not set: the exported JWKS would match no running authgate",
            "generate one with `authgate keygen` and set signing_key",
        )
    cfg = build_runtime(settings, warn=False)
    discovery = oidc_discovery_json(cfg)
    if discovery is None and not jwks_only:
        raise ConfigError(
            "jwt_issuer_format",
            f"is {settings.jwt_issuer_format}: the assertion's iss ({cfg.assertion_issuer}) "
            "is not a URL, so there is no discovery document",
            "set jwt_issuer_format: uri, or pass --jwks-only",
        )
    files = {JWKS_PATH: cfg.jwks_json}
    if discovery is not None and not jwks_only:
        files[OIDC_DISCOVERY_PATH] = discovery
    written = []
    for url_path, body in files.items():
        target = directory / url_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        written.append(target)
    return written


def cmd_issuer_export(args: argparse.Namespace) -> int:
    for path in export_files(args.config, Path(args.dir), jwks_only=args.jwks_only):
        print(path)
    return 0


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `signing-key` and `issuer` to authgate's subcommands."""
    signing = sub.add_parser(
        "signing-key",
        help="rotate the assertion signing key: rotate (publish a new key), promote (sign "
        "with it), retire (drop the old one); prints the new signing_key value",
    )
    steps = signing.add_subparsers(dest="step", required=True)
    for step, text in (
        ("rotate", "step 1: CURRENT's keys plus a new one, published but not signing yet"),
        ("promote", "step 2: the last key moves first and signs; the others stay published"),
        ("retire", "step 3: only the first (signing) key is kept"),
    ):
        one = steps.add_parser(step, help=text, description=text)
        one.add_argument(
            "current",
            metavar="CURRENT",
            help="the present signing_key value (base64), a PEM file (signing_key_file), "
            "or - for standard input",
        )
        one.add_argument(
            "--pem", action="store_true", help="print PEM (for signing_key_file) instead of base64"
        )
        one.set_defaults(func=cmd_signing_key)

    issuer = sub.add_parser("issuer", help="the assertion issuer's public documents")
    issuer_sub = issuer.add_subparsers(dest="action", required=True)
    export = issuer_sub.add_parser(
        "export",
        help="write DIR/.well-known/openid-configuration and DIR/.well-known/pomerium/jwks.json "
        "as authgate serves them, for hosting elsewhere",
    )
    export.add_argument("dir", metavar="DIR")
    export.add_argument("-c", "--config", required=True)
    export.add_argument(
        "--jwks-only",
        action="store_true",
        help="only the JWKS (jwt_issuer_format host/hostOnly have no discovery document)",
    )
    export.set_defaults(func=cmd_issuer_export)
