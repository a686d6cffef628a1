"""`make demo`: Envoy + authgate + a dev IdP + a sample app on a Unix socket, on this machine.

Open the printed URL; sign in as alice@example.com / alice-password (allowed) or
bob@evil.org / bob-password (denied by the policy). Ctrl-C stops everything.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authgate.config.runtime import generate_signing_key_b64  # noqa: E402
from tests.support.certs import make_pki  # noqa: E402
from tests.support.idp import TestIdP  # noqa: E402
from tests.support.upstream import SampleUpstream  # noqa: E402

WORK = ROOT / ".demo"


def port_or_free(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    WORK.mkdir(exist_ok=True)
    port = port_or_free(8443)
    app, auth = f"https://app.localhost:{port}", f"https://auth.localhost:{port}"
    pki = make_pki(WORK / "tls", ["app.localhost", "auth.localhost", "localhost"])
    idp = TestIdP(
        port=port_or_free(9400),
        clients=[
            {
                "client_id": "authgate",
                "client_secret": "demo-secret",
                "redirect_uris": [f"{auth}/oauth2/callback"],
                "post_logout_redirect_uris": [f"{auth}/.pomerium/signed_out"],
            }
        ],
    )
    sock = WORK / "app.sock"
    if len(str(sock)) > 100:  # AF_UNIX path limit
        sock = Path(tempfile.mkdtemp(prefix="authgate-demo-")) / "app.sock"
    with (
        idp,
        SampleUpstream(
            unix_path=sock,
            jwks_url=f"{app}/.well-known/pomerium/jwks.json",
            ca_file=pki.ca_file,
            issuers=["auth.localhost"],
            audiences=["app.localhost"],
        ),
    ):
        config = {
            "address": f"127.0.0.1:{port}",
            "certificate_file": str(pki.cert_file),
            "certificate_key_file": str(pki.key_file),
            "authenticate_service_url": auth,
            "idp_provider": "oidc",
            "idp_provider_url": idp.issuer,
            "idp_client_id": "authgate",
            "idp_client_secret": "demo-secret",
            "idp_scopes": ["openid", "profile", "email", "groups"],
            "signing_key": generate_signing_key_b64(),
            "cookie_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
            "routes": [
                {
                    "from": app,
                    "to": f"unix://{sock}",
                    "pass_identity_headers": True,
                    "host_rewrite_header": True,
                    "allow_websockets": True,
                    "policy": [{"allow": {"and": [{"domain": {"is": "example.com"}}]}}],
                }
            ],
        }
        config_path = WORK / "config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        print(
            f"""
authgate demo
  open        {app}/
              (the certificate is from a demo CA: trust {pki.ca_file} or accept the warning)
  sign in as  alice@example.com / alice-password   (allowed: domain example.com)
              bob@evil.org / bob-password          (signed in, but denied: 403)
  identity    {app}/.pomerium/    sign out: {app}/.pomerium/sign_out
  IdP         {idp.issuer}
  config      {config_path}
""",
            flush=True,
        )
        env = dict(os.environ)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "authgate",
                "run",
                "-c",
                str(config_path),
                "--runtime-dir",
                str(WORK / "run"),
            ],
            env=env,
        )
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.wait()
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
