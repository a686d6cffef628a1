"""Rewrite the README's migration table (section "Coming from Pomerium") from the schema and
authgate.config.pomerium_keys; run it after adding or removing a config key, and commit."""

from pathlib import Path

from authgate.config.pomerium_keys import with_table

README = Path(__file__).resolve().parents[1] / "README.md"


def main() -> None:
    README.write_text(with_table(README.read_text()))


if __name__ == "__main__":
    main()
