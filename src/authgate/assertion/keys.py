"""Several signing keys in one `signing_key` value (Pomerium's rotation): PEM blocks, in order.

The first key signs; every key is published in the JWKS. Rotation is three edits of the value:
publish a new key second (`rotate`), move it first (`promote`), drop the others (`retire`).
"""

import base64
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL
)
# `openssl ecparam -genkey` without -noout writes the curve parameters before the key.
_SKIPPED_LABELS = (b"EC PARAMETERS",)


def split_pem_blocks(pem: bytes) -> list[bytes]:
    """The PEM blocks of `pem` in order (curve-parameter blocks skipped); the whole input as one
    block when it holds none (so that the key parser reports what is wrong with it)."""
    blocks = [
        m.group(0) + b"\n"
        for m in _PEM_BLOCK.finditer(pem)
        if m.group(1) not in _SKIPPED_LABELS
    ]
    return blocks or [pem]


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def encode_keys(blocks: list[bytes]) -> str:
    """The `signing_key` value (base64 of the concatenated PEM blocks)."""
    return base64.b64encode(b"".join(blocks)).decode()


def rotate(blocks: list[bytes], new: bytes | None = None) -> list[bytes]:
    """Step 1, publish: the present keys, then a new one (it is published, not yet signing)."""
    return [*blocks, new if new is not None else private_pem(new_private_key())]


def promote(blocks: list[bytes]) -> list[bytes]:
    """Step 2, switch: the last key moves first and signs; the others stay published."""
    if len(blocks) < 2:
        raise ValueError("holds one key: nothing to promote (run rotate first)")
    return [blocks[-1], *blocks[:-1]]


def retire(blocks: list[bytes]) -> list[bytes]:
    """Step 3, retire: only the signing (first) key is kept."""
    return blocks[:1]
