"""Coverage-guided fuzzing of authgate with atheris (libFuzzer), for runs longer than CI's.

    make fuzz                          # every target, FUZZ_SECONDS (default 60) each
    python fuzz/run.py --seconds 600 redirect handoff
    python fuzz/run.py --one check -max_total_time=30 fuzz/corpus/check   # one libFuzzer run

Each target decodes the fuzzer's bytes into inputs for one contract in fuzz/targets.py (the
same contracts the hypothesis tests check in CI). A crash is any exception other than the
documented ones; libFuzzer saves the input as fuzz/artifacts/<target>-crash-*, and
`python fuzz/run.py --one <target> <that file>` replays it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

TARGETS = (
    "cookie",
    "cookie_header",
    "handoff",
    "handoff_payload",
    "redirect",
    "headers",
    "config",
    "policy",
    "check",
)


def _harness(name: str) -> Callable[[bytes], None]:
    import atheris

    with atheris.instrument_imports(include=["authgate", "fuzz"]):
        from fuzz import targets

    tmp = Path(tempfile.mkdtemp(prefix="authgate-fuzz-"))

    def text(fdp: atheris.FuzzedDataProvider, limit: int = 512) -> str:
        return str(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, limit)))

    def cookie(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        if fdp.ConsumeBool():
            targets.check_cookie_value(text(fdp, 2048))
        else:
            targets.check_cookie_mutation(
                fdp.ConsumeIntInRange(0, 4096), text(fdp, 4), fdp.ConsumeIntInRange(0, 400)
            )

    def cookie_header(data: bytes) -> None:
        targets.check_cookie_header(data.decode("utf-8", "replace"))

    def handoff(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        nonce = text(fdp, 40)
        targets.check_handoff_token(text(fdp, 2048).replace("&", "%26").replace("#", "%23"), nonce)

    def handoff_payload(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        nonce = "0123456789abcdef0123456789abcdef" if fdp.ConsumeBool() else text(fdp, 40)
        targets.check_json_payload_bytes(fdp.ConsumeBytes(fdp.remaining_bytes()), nonce)

    def redirect(data: bytes) -> None:
        targets.check_redirect(data.decode("utf-8", "replace"))

    names = [
        "x-pomerium-jwt-assertion",
        "x-pomerium-claim-email",
        "x_pomerium_claim_email",
        "x-pomerium",
        "cookie",
        "accept",
        "",
    ]

    def headers(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        found: dict[str, str] = {}
        for _ in range(fdp.ConsumeIntInRange(0, 12)):
            found[fdp.PickValueInList(names) + text(fdp, 20)] = text(fdp, 80)
        targets.check_forward(found, fdp.ConsumeBool())

    def config(data: bytes) -> None:
        import yaml

        source = data.decode("utf-8", "replace")
        try:
            raw = yaml.safe_load(source)
        except (yaml.YAMLError, RecursionError):
            return  # not YAML, or too deep for PyYAML itself (load_settings refuses that too)
        if isinstance(raw, dict) and raw.get("merge"):
            route = raw.get("route") if isinstance(raw.get("route"), dict) else {}
            raw = targets.config_with({k: v for k, v in raw.items() if k != "route"}, route)
        targets.check_config_mapping(raw, tmp)

    def policy(data: bytes) -> None:
        targets.check_policy_yaml(data.decode("utf-8", "replace"))

    kinds = ["route", "internal", "authenticate", ""]
    routes = ["route-0", "route-1", "__authenticate__", ""]
    hosts = ["app.test:8443", "public.test:8443", "authenticate.test:8443"]
    paths = [
        "/",
        "/.pomerium/callback?handoff=",
        "/.pomerium/sign_out?pomerium_redirect_uri=",
        "/.pomerium/sign_in?req=",
        "/oauth2/callback?code=x&state=",
        "/.pomerium/signed_out?state=",
        "/.well-known/pomerium/jwks.json",
        "/.pomerium/",
    ]

    def check(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        found: dict[str, str] = {}
        for _ in range(fdp.ConsumeIntInRange(0, 6)):
            found[fdp.PickValueInList([*names, "origin", "sec-fetch-site"]) + text(fdp, 10)] = text(
                fdp, 80
            )
        if fdp.ConsumeBool():
            found["cookie"] = f"__Host-_pomerium={targets.genuine_cookie()}"
        targets.check_request(
            fdp.PickValueInList(kinds),
            fdp.PickValueInList(routes),
            fdp.PickValueInList(["GET", "POST", "HEAD"]),
            fdp.PickValueInList(hosts),
            fdp.PickValueInList(paths) + text(fdp, 400),
            found,
        )

    return {
        "cookie": cookie,
        "cookie_header": cookie_header,
        "handoff": handoff,
        "handoff_payload": handoff_payload,
        "redirect": redirect,
        "headers": headers,
        "config": config,
        "policy": policy,
        "check": check,
    }[name]


def _seed(name: str, corpus: Path) -> None:
    """A few meaningful starting inputs per target (libFuzzer mutates from there)."""
    if any(corpus.iterdir()):
        return
    import yaml

    from fuzz import targets

    seeds: list[bytes] = []
    if name == "redirect":
        lines = (ROOT / "tests/data/open-redirects.txt").read_text(encoding="utf-8").split("\n")
        seeds = [line.encode() for line in lines if line]
    elif name in ("cookie", "handoff"):
        seeds = [b"\x01" + targets.genuine_cookie().encode(), targets.genuine_cookie().encode()]
    elif name == "cookie_header":
        seeds = [f"__Host-_pomerium={targets.genuine_cookie()}; JSESSIONID=1".encode()]
    elif name == "handoff_payload":
        now = int(time.time())
        ref = targets.genuine_ref()  # a session that is in the harness's store
        seeds = [
            b'{"s": {"sid": "%s", "iat": %d, "exp": %d}, "t": "/x", '
            b'"n": "0123456789abcdef0123456789abcdef", "exp": %d, "jti": "j"}'
            % (ref.sid.encode(), ref.issued_at, ref.expires_at, now + 60)
        ]
    elif name == "config":
        seeds = [
            yaml.safe_dump(targets.base_config()).encode(),
            b"merge: true\nroute:\n  timeout: 5s\n",
        ]
    elif name == "policy":
        seeds = [
            b"- allow:\n    and:\n      - domain: {is: example.com}\n",
            b"allow: {or: [{email: {in: [a@b.c]}}, {groups: {has: admins}}]}\n",
        ]
    else:
        seeds = [b"\x00" * 64, bytes(range(256))]
    for index, seed in enumerate(seeds):
        (corpus / f"seed-{index}").write_bytes(seed)


def run_one(name: str, libfuzzer_args: list[str]) -> None:
    import atheris

    fn = _harness(name)
    atheris.Setup([sys.argv[0], *libfuzzer_args], fn)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--one", choices=TARGETS, help="run one target in this process")
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    args, rest = parser.parse_known_args()
    if args.one:
        run_one(args.one, [*args.targets, *rest])
        return 0
    chosen = args.targets or list(TARGETS)
    unknown = sorted(set(chosen) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s): {', '.join(unknown)}")
    artifacts = HERE / "artifacts"
    artifacts.mkdir(exist_ok=True)
    failed = []
    for name in chosen:
        corpus = HERE / "corpus" / name
        corpus.mkdir(parents=True, exist_ok=True)
        _seed(name, corpus)
        print(f"fuzz {name}: {args.seconds}s", flush=True)
        code = subprocess.call(
            [
                sys.executable,
                str(Path(__file__)),
                "--one",
                name,
                f"-max_total_time={args.seconds}",
                f"-artifact_prefix={artifacts}/{name}-",
                "-print_final_stats=1",
                str(corpus),
            ]
        )
        if code != 0:
            failed.append(name)
    if failed:
        print(f"fuzz: crashes in {', '.join(failed)}; inputs in {artifacts}", file=sys.stderr)
        return 1
    print(f"fuzz: {len(chosen)} targets, no crash", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
