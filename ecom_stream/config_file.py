"""The config file layer: ``ecom-stream.toml`` below environment variables and flags.

Keys are the field names of :class:`~ecom_stream.config.Settings` (whatever fields it has, so
a new field is a valid key with no change here), plus a ``[policies]`` table and
``extra_rules`` as a list of ``"package.module:NAME"``. Precedence: default < file < env < flag.
"""

from __future__ import annotations

import datetime
import difflib
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

from ecom_stream.config import Origin, Settings, default_policies
from ecom_stream.contract.user_rules import load_rules
from ecom_stream.errors import ConfigError, UsageError

__all__ = ["CONFIG_ENV", "DEFAULT_NAME", "Resolved", "find_config", "read_config", "resolve"]

DEFAULT_NAME = "ecom-stream.toml"
CONFIG_ENV = "ECOM_CONFIG"
_EXPECTED = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    Path: "a path (a string)",
    tuple[str, ...]: "a list of strings",
}


@dataclass(frozen=True)
class Resolved:
    """The effective settings, where each came from, and the file read (if any)."""

    settings: Settings
    origins: Mapping[str, Origin]
    path: Path | None


def find_config(flag: str | None, env: Mapping[str, str]) -> Path | None:
    """``--config FILE``, else ``ECOM_CONFIG``, else ``./ecom-stream.toml`` if it exists.

    A file named by the flag or the variable must exist (a usage error otherwise)."""
    for named, how in ((flag, "--config"), (env.get(CONFIG_ENV) or None, CONFIG_ENV)):
        if named:
            path = Path(named).expanduser()
            if not path.is_file():
                raise UsageError(f"{how} {named}: no such file")
            return path
    default = Path(DEFAULT_NAME)
    return default if default.is_file() else None


def read_config(path: Path) -> dict[str, Any]:
    """The file's typed values by field name; a one-line error for a bad key or value."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    hints = get_type_hints(Settings)
    known = [f.name for f in fields(Settings)]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise UsageError(f"{path}: unknown key {key!r}{_nearest(key, known)}")
        if key == "extra_rules":
            values[key] = _rules(value, path)
        elif key == "policies":
            continue  # checked once the extra rules (which add policy names) are known
        else:
            values[key] = _typed(key, hints[key], value, path)
    if "policies" in raw:
        values["policies"] = _policies(raw["policies"], values.get("extra_rules", ()), path)
    return values


def _nearest(key: str, known: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {prefix + close[0]!r}?)"
    return f" (valid keys: {', '.join(prefix + k for k in known)})"


def _bad(path: Path, key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{path}: {key} = {value!r} is not valid: expected {expected}")


def _typed(key: str, hint: Any, value: Any, path: Path) -> Any:
    """``value`` as the field's type (TOML already types it; ints are accepted as floats)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        # ``X | None``: TOML has no null, so the value must be an X.
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = inner[0] if len(inner) == 1 else hint
    expected = _EXPECTED.get(hint, f"a value of type {hint}")
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
        Path: isinstance(value, str),
    }
    if hint == tuple[str, ...]:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise _bad(path, key, value, expected)
    if hint is str and isinstance(value, datetime.date):
        return value.isoformat()  # an unquoted TOML date (earliest_order_date = 2000-01-01)
    if hint not in ok:
        return value  # a type this layer does not know: Settings checks it
    if not ok[hint]:
        raise _bad(path, key, value, expected)
    if hint is Path:
        return Path(value).expanduser()
    return float(value) if hint is float else value


def _rules(value: Any, path: Path) -> tuple[Any, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(path, "extra_rules", value, 'a list of "package.module:NAME" strings')
    rules: list[Any] = []
    for spec in value:
        try:
            rules.extend(load_rules(spec))
        except ConfigError as exc:
            raise ConfigError(f"{path}: extra_rules: {exc}") from None
    return tuple(rules)


def _policies(value: Any, rules: tuple[Any, ...], path: Path) -> dict[str, str]:
    from ecom_stream.config import POLICIES

    if not isinstance(value, dict):
        raise _bad(path, "policies", value, "a table of expectation = policy")
    known = sorted(default_policies(rules))
    out: dict[str, str] = {}
    for name, policy in value.items():
        if name not in known:
            near = _nearest(name, known, "policies.")
            raise UsageError(f"{path}: unknown key 'policies.{name}'{near}")
        if policy not in POLICIES:
            raise _bad(path, f"policies.{name}", policy, "one of " + ", ".join(POLICIES))
        out[name] = policy
    return out


def resolve(
    overrides: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    config: str | None = None,
) -> Resolved:
    """Settings from defaults < config file < ``ECOM_*`` < ``overrides`` (the flags)."""
    env = os.environ if env is None else env
    path = find_config(config, env)
    file = read_config(path) if path is not None else {}
    if file:
        _check_alone(file, path)
    values, origins = Settings.layered(env, overrides, file=file)
    shown = str(path.absolute()) if path is not None else ""
    origins = {
        k: Origin("file", shown) if o.source == "file" else o for k, o in origins.items()
    }
    return Resolved(Settings(**values), origins, path)


def _check_alone(file: Mapping[str, Any], path: Path | None) -> None:
    """Refuse a file whose values Settings refuses, naming the key (and the file)."""
    try:
        Settings(**file)
        return
    except ConfigError as exc:
        whole = exc
    for key, value in file.items():
        try:
            Settings(**{key: value})
        except ConfigError as exc:
            raise ConfigError(f"{path}: {key} = {_show(value)}: {exc}") from None
    raise ConfigError(f"{path}: {whole}") from None


def _show(value: Any) -> str:
    return repr(str(value)) if isinstance(value, Path) else repr(value)
