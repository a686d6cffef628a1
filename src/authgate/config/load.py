"""Load config.yaml: YAML -> environment overrides -> secret files -> validated Settings."""

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from authgate.config.pomerium_keys import check_config
from authgate.config.schema import Route, Settings
from authgate.errors import ConfigError

# Secrets may come from a file named by `<key>_file` (Kubernetes/Docker secrets).
SECRET_FILE_KEYS = {
    "cookie_secret_file": "cookie_secret",
    "signing_key_file": "signing_key",
    "idp_client_secret_file": "idp_client_secret",
    "databroker_storage_connection_string_file": "databroker_storage_connection_string",
}


def _env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Like Pomerium, a top-level key can be set by its upper-cased name in the environment."""
    merged = dict(raw)
    for name in Settings.model_fields:
        if name == "routes":
            continue
        value = environ.get(name.upper())
        if value is not None and value != "":
            merged[name] = value
    return merged


def _read_secret_files(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    merged = dict(raw)
    for file_key, key in SECRET_FILE_KEYS.items():
        path_value = merged.get(file_key)
        if not path_value:
            continue
        path = Path(str(path_value))
        if not path.is_absolute():
            path = base / path
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                file_key, f"cannot read {path}: {exc.strerror}", "fix the path"
            ) from None
        except ValueError:  # a NUL in the path, or a file that is not text
            raise ConfigError(file_key, f"cannot read {path!r}", "fix the path") from None
        if merged.get(key):
            raise ConfigError(key, f"set both `{key}` and `{file_key}`", "keep only one of them")
        if key == "signing_key" and "BEGIN" in text:
            # A PEM file is accepted as-is; the inline key is base64 of the PEM, as in Pomerium.
            text = base64.b64encode(text.encode()).decode()
        merged[key] = text
    return merged


def _format_validation_error(exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    loc = ".".join(
        f"[{part}]" if isinstance(part, int) else str(part) for part in err["loc"]
    ).replace(".[", "[")
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return ConfigError(loc, "unknown key", "check the spelling against the README's reference")
    if err["type"] == "missing":
        return ConfigError(loc, "is required", "add it to the config file")
    if err["type"] == "literal_error":
        return ConfigError(loc, msg)
    return ConfigError(loc, msg)


def settings_from_mapping(
    raw: object, base: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("", "the config file must be a YAML mapping of keys to values")
    check_config(raw, Settings.model_fields,
                 [f.alias or n for n, f in Route.model_fields.items()])
    env = os.environ if environ is None else environ
    data = _read_secret_files(_env_overrides(raw, env), base or Path.cwd())
    for file_key in SECRET_FILE_KEYS:
        data.pop(file_key, None)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise _format_validation_error(exc) from None
    except RecursionError:
        raise ConfigError("", "the config is nested too deeply") from None


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror}") from None
    except ValueError:  # a NUL in the path, or bytes that are not UTF-8
        raise ConfigError("", f"cannot read config file {path!r}: not UTF-8 text") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("", f"{path} is not valid YAML{where}") from None
    except RecursionError:
        raise ConfigError("", f"{path} is nested too deeply to be a config file") from None
    return settings_from_mapping(raw, base=path.parent, environ=environ)
