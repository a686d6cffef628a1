"""PPL `client_certificate`: a certificate matcher on the client's TLS certificate (downstream
mTLS), as Pomerium defines it: `fingerprint` (SHA-256 of the certificate, 64 lower-case hex
digits or AB:CD:... upper-case), `spki_hash` (base64 SHA-256 of the public key), and
`san_dns`, `san_email`, `san_uri` (string matchers on the Subject Alternative Names). Every
condition given must hold. Envoy verified the certificate against `downstream_mtls` before
authz sees it; one that does not verify never gets this far."""

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from authgate.errors import ConfigError
from authgate.policy.matchers import string_matcher
from authgate.policy.model import PolicyInput

_SHORT = re.compile(r"^[0-9a-f]{64}$")
_LONG = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){31}$")
_FIX = "e.g. client_certificate: {fingerprint: <sha256 hex>} or {spki_hash: <base64>}"
_SAN_TYPES: dict[str, type[x509.GeneralName]] = {
    "san_dns": x509.DNSName,
    "san_email": x509.RFC822Name,
    "san_uri": x509.UniformResourceIdentifier,
}


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    fingerprint: str
    spki_hash: str
    sans: dict[str, tuple[str, ...]]


Condition = Callable[[CertificateFacts], bool]


@lru_cache(maxsize=256)  # a handful of clients send the same certificate again and again
def certificate_facts(pem: str) -> CertificateFacts | None:
    """What a matcher reads from the leaf certificate in `pem`; None if there is none."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii", "replace"))
    except ValueError:
        return None
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        names = None
    sans = {
        key: tuple(str(v) for v in names.get_values_for_type(kind)) if names else ()  # type: ignore[arg-type]
        for key, kind in _SAN_TYPES.items()
    }
    return CertificateFacts(
        fingerprint=hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
        spki_hash=base64.b64encode(hashlib.sha256(spki).digest()).decode(),
        sans=sans,
    )


def _strings(value: object, what: str, where: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(where, f"{what} expects a string or a list of strings", _FIX)
    return [str(i) for i in items]


def _fingerprint(value: str, where: str) -> str:
    if _SHORT.match(value):
        return value
    if _LONG.match(value):
        return value.replace(":", "").lower()
    raise ConfigError(
        where, f"unsupported certificate fingerprint format ({value})",
        "give the SHA-256 fingerprint as 64 lower-case hex digits or AB:CD:... upper-case",
    )


def _spki(value: str, where: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(
            where, f"certificate SPKI hash must be a base64-encoded SHA-256 hash (was {value})",
            _FIX,
        )
    return value


def _condition(key: str, value: object, where: str) -> tuple[Condition, str]:
    if key == "fingerprint":
        allowed = frozenset(_fingerprint(v, where) for v in _strings(value, key, where))
        return (lambda facts: facts.fingerprint in allowed), f"fingerprint in {sorted(allowed)}"
    if key == "spki_hash":
        hashes = frozenset(_spki(v, where) for v in _strings(value, key, where))
        return (lambda facts: facts.spki_hash in hashes), f"spki_hash in {sorted(hashes)}"
    if key in _SAN_TYPES:
        test, text = string_matcher(value, f"{where}.{key}")
        return (lambda facts: any(test(name) for name in facts.sans[key])), f"{key} {text}"
    raise ConfigError(
        where, f"unsupported certificate matcher condition: {key}",
        "use fingerprint, spki_hash, san_dns, san_email or san_uri",
    )


def compile_matcher(spec: object, where: str) -> tuple[Callable[[PolicyInput], bool], str]:
    """The criterion's predicate and its text for explanations."""
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(where, "client_certificate expects a certificate matcher object", _FIX)
    parts = [_condition(str(key), value, where) for key, value in spec.items()]
    conditions = tuple(test for test, _ in parts)

    def predicate(inp: PolicyInput) -> bool:
        if not inp.client_certificate:
            return False
        facts = certificate_facts(inp.client_certificate)
        return facts is not None and all(test(facts) for test in conditions)

    return predicate, " and ".join(text for _, text in parts)


def describe(inp: PolicyInput) -> str:
    if not inp.client_certificate:
        return "no client certificate"
    facts = certificate_facts(inp.client_certificate)
    return "an unreadable certificate" if facts is None else f"fingerprint {facts.fingerprint}"
