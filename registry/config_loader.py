"""Reading the registry's configuration: YAML file, environment overrides, Distribution's aliases.

The schema (every key, as dataclasses) is ``registry.config``; this module is the machinery that
turns plain data into it — type conversion with errors naming the key path, ``PYREG_*`` /
``REGISTRY_*`` environment overrides, Distribution's key aliases, validation across keys, and the
way back to plain data. Kept apart so the schema file stays a declarative list of keys.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from pyreg.registry.config import (
    ENV_PREFIX,
    ENV_PREFIXES,
    Config,
    ConfigError,
    FilesystemConfig,
    ReadOnlyConfig,
    parse_duration,
    parse_size,
    split_addr,
)

# ---------------------------------------------------------------------------------------------
# building dataclasses from plain data, with errors that name the key


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _convert(tp: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
    if tp is Any:  # a key kept as given (not_implemented); a bare ``key:`` counts as given
        return {} if value is None else _deep_copy(value)
    optional, tp = _is_optional(tp)
    if value is None:
        if optional:
            return None
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return _build(tp, {}, key)
        raise ConfigError(f"{key}: must not be empty")
    kind = meta.get("kind")
    if kind == "duration":
        return parse_duration(value, key)
    if kind == "size":
        return parse_size(value, key)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if tp is ReadOnlyConfig and isinstance(value, bool):  # readonly: true as a shorthand
            return ReadOnlyConfig(enabled=value)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str) and item is str:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return [_convert(item, v, f"{key}[{i}]", {}) for i, v in enumerate(value)]
    if origin is dict:
        _, vtype = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return {str(k): _convert(vtype, v, f"{key}.{k}", {}) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover - schema bug


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        path = f"{prefix}.{key}" if prefix else key
        if key not in fields or fields[key].metadata.get("internal"):
            known = ", ".join(sorted(k for k, f in fields.items() if not f.metadata.get("internal")))
            raise ConfigError(f"unknown configuration key {path!r} (known here: {known})")
        kwargs[key] = _convert(hints[key], value, path, fields[key].metadata)
    return cls(**kwargs)


def _validate(config: Config) -> Config:
    split_addr(config.addr)
    if config.workers < 1:
        raise ConfigError("workers: must be at least 1")
    if config.http.net != "tcp":
        raise ConfigError(f"http.net: pyreg listens on tcp only, got {config.http.net!r}")
    if config.metrics.addr is not None:
        split_addr(config.metrics.addr, "metrics.addr (http.debug.addr)")
    storage = config.storage
    for name in ("inmemory", "azure", "gcs", "swift", "oss"):
        if getattr(storage, name) is not None:
            raise ConfigError(f"storage.{name}: pyreg has no {name} driver; use filesystem or s3")
    if config.auth.silly is not None:
        raise ConfigError("auth.silly: Distribution's development-only auth is not supported; "
                          "use htpasswd or token")
    if storage.cache.blobdescriptor not in ("inmemory", "redis", ""):
        raise ConfigError("storage.cache.blobdescriptor: expected inmemory or redis, "
                          f"got {storage.cache.blobdescriptor!r}")
    if storage.cache.blobdescriptor == "redis" and config.redis is None:
        raise ConfigError("storage.cache.blobdescriptor: redis needs the redis key (redis.addr)")
    if storage.s3 is not None and storage.redirect.disable is not None:
        storage.s3.redirect.enabled = not storage.redirect.disable
    if storage.filesystem is not None and storage.s3 is not None:
        raise ConfigError("storage: configure exactly one driver, not both filesystem and s3")
    if storage.filesystem is None and storage.s3 is None:
        storage.filesystem = FilesystemConfig()
    if storage.filesystem is not None and not storage.filesystem.rootdirectory:
        raise ConfigError("storage.filesystem.rootdirectory: must not be empty")
    if storage.s3 is not None and not storage.s3.bucket:
        raise ConfigError("storage.s3.bucket: required for the s3 driver")
    if storage.maintenance.uploadpurging.enabled and storage.maintenance.uploadpurging.interval <= 0:
        raise ConfigError("storage.maintenance.uploadpurging.interval: must be positive")
    # htpasswd and token together: token auth, with htpasswd holding the built-in /token's users
    if config.auth.htpasswd is not None and not config.auth.htpasswd.path:
        raise ConfigError("auth.htpasswd.path: required")
    token = config.auth.token
    if token is not None and not token.realm and not token.signingkey:
        raise ConfigError("auth.token.realm: required unless pyreg issues the tokens (auth.token.signingkey)")
    if token is not None and not (token.signingkey or token.rootcertbundle or token.jwks):
        raise ConfigError("auth.token: give signingkey (pyreg issues tokens) or rootcertbundle/jwks")
    if token is not None and token.kidformat not in ("libtrust", "thumbprint"):
        raise ConfigError(f"auth.token.kidformat: expected libtrust or thumbprint, got {token.kidformat!r}")
    from pyreg.registry.auth.access import parse_rules  # the one reading of access rules

    try:
        parse_rules([dataclasses.asdict(rule) for rule in config.access])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if config.tls is not None and bool(config.tls.certificate) != bool(config.tls.key):
        raise ConfigError("tls: certificate and key must be given together")
    if config.log.level.lower() not in ("debug", "info", "warning", "warn", "error", "critical"):
        raise ConfigError(f"log.level: unknown level {config.log.level!r}")
    if config.log.format not in ("text", "json", "logstash"):
        raise ConfigError(f"log.format (log.formatter): expected text, json or logstash, "
                          f"got {config.log.format!r}")
    minimumtls = config.tls.minimumtls if config.tls is not None else None
    if minimumtls is not None and minimumtls not in ("tls1.0", "tls1.1", "tls1.2", "tls1.3"):
        raise ConfigError(f"http.tls.minimumtls: expected tls1.0 … tls1.3, got {minimumtls!r}")
    storagedriver = config.health.storagedriver
    if storagedriver.interval <= 0 or storagedriver.threshold < 1:
        raise ConfigError("health.storagedriver: interval must be positive and threshold at least 1")
    for i, endpoint in enumerate(config.notifications.endpoints):
        key = f"notifications.endpoints[{i}]"
        if not re.match(r"^https?://[^/\s]+", endpoint.url):
            raise ConfigError(f"{key}.url: expected an http:// or https:// URL, got {endpoint.url!r}")
        unknown = (set(endpoint.events) | set(endpoint.ignore.actions)) - {"push", "pull", "delete"}
        if unknown:
            raise ConfigError(f"{key}: unknown action(s) {sorted(unknown)} (push, pull, delete)")
        if endpoint.threshold < 1 or endpoint.queuesize < 1:
            raise ConfigError(f"{key}: threshold and queuesize must be at least 1")
        endpoint.name = endpoint.name or f"endpoint{i}"
    indexes = config.validation.manifests.indexes
    indexes.platforms = indexes.platforms.lower()
    if indexes.platforms not in ("all", "list", "none"):
        raise ConfigError("validation.manifests.indexes.platforms: expected all, list or none, "
                          f"got {indexes.platforms!r}")
    if indexes.platforms == "list" and not indexes.platformlist:
        raise ConfigError("validation.manifests.indexes.platformlist: required when platforms is list")
    for i, platform in enumerate(indexes.platformlist):
        if not platform.architecture or not platform.os:
            raise ConfigError(f"validation.manifests.indexes.platformlist[{i}]: "
                              "needs both architecture and os")
    metrics_path = config.metrics.path
    if not metrics_path.startswith("/") or metrics_path.rstrip("/") in ("", "/v2", "/healthz", "/readyz") or (
            metrics_path.startswith("/v2/")):
        raise ConfigError(f"metrics.path: must be an absolute path outside /v2, got {metrics_path!r}")
    ui_path = config.ui.path.rstrip("/")
    if not ui_path.startswith("/") or ui_path in ("/v2", "/healthz", "/readyz", metrics_path.rstrip("/")) or (
            ui_path.startswith("/v2/")):
        raise ConfigError(f"ui.path: must be an absolute path outside /v2 and /metrics, "
                          f"got {config.ui.path!r}")
    from pyreg.registry.mirror.config import check_mirror  # Distribution's proxy: becomes an upstream

    check_mirror(config)
    return config


# ---------------------------------------------------------------------------------------------
# environment overrides


def _env_path(cls: type, parts: list[str]) -> list[str] | None:
    """Match upper-case env parts to a key path through the dataclass schema (None: no match)."""
    if not parts:
        return []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name.upper() != parts[0]:
            continue
        rest = parts[1:]
        if not rest:
            return [f.name]
        _, tp = _is_optional(hints[f.name])
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            sub = _env_path(tp, rest)
            if sub is not None:
                return [f.name, *sub]
        if typing.get_origin(tp) is dict:
            return [f.name, "_".join(rest).lower()]
        return None
    return None


def _schema_at(path: tuple[str, ...]) -> type:
    """The dataclass holding the keys under ``path`` (a mapping key of the schema)."""
    cls: Any = Config
    for part in path:
        _, cls = _is_optional(_hints(cls)[part])
    return typing.cast(type, cls)


def _env_alias_path(parts: list[str]) -> list[str] | None:
    """An environment variable's parts through ``ALIASES`` (REGISTRY_HTTP_ADDR -> addr)."""
    for source, target in ALIASES.items():
        upper = [p.upper() for p in source]
        if parts[:len(upper)] != upper:
            continue
        rest = parts[len(upper):]
        if not rest:
            return list(target)
        cls = _schema_at(target)
        if dataclasses.is_dataclass(cls):
            sub = _env_path(cls, rest)
            if sub is not None:
                return [*target, *sub]
    return None


def env_overrides(environ: Mapping[str, str],
                  ignored: list[str] | None = None) -> list[tuple[list[str], Any, str]]:
    """(key path, parsed value, variable name) for every PYREG_* or REGISTRY_* variable naming a
    config key (pyreg's or Distribution's name for it).

    Variables whose first component is not a top-level key are left alone (the client has its
    own ``PYREG_*`` settings; Kubernetes adds ``REGISTRY_PORT`` for a Service called registry);
    one that starts like a key but names none is an error for ``PYREG_*`` and, as in Distribution,
    only ignored for ``REGISTRY_*`` (its name appended to ``ignored``): other programs use that
    prefix too (podman's ``REGISTRY_AUTH_FILE``).
    """
    top = {f.name.upper() for f in dataclasses.fields(Config)} | {s[0].upper() for s in ALIASES}
    found = []
    for name, raw in sorted(environ.items()):
        prefix = next((p for p in ENV_PREFIXES if name.startswith(p)), None)
        if prefix is None:
            continue
        parts = name[len(prefix):].split("_")
        if parts[0] not in top:
            continue
        path = _env_alias_path(parts) or _env_path(Config, parts)
        if path is None and prefix != ENV_PREFIX and ignored is not None:
            ignored.append(name)
            continue
        if path is None:
            raise ConfigError(f"environment variable {name} does not name a configuration key")
        import yaml  # here, not at the top: a worker loads its config from JSON (~1.4 MiB less)

        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"environment variable {name}: not valid YAML: {e}") from None
        found.append((path, value, name))
    return found


# Distribution's keys that are pyreg keys in another place: moved there in each layer (file,
# environment, flags) before the layers are merged, so precedence holds whichever name is used.
ALIASES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("http", "addr"): ("addr",),
    ("http", "tls"): ("tls",),
    ("http", "debug", "addr"): ("metrics", "addr"),
    ("http", "debug", "prometheus"): ("metrics",),
    ("log", "formatter"): ("log", "format"),
    ("loglevel",): ("log", "level"),
}


_TOP_SECTIONS = frozenset({"storage", "auth"})  # the sections a REGISTRY_<SECTION>=<name> selects in


def _pop_path(data: dict[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = data
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or path[-1] not in node:
        return False, None
    return True, node.pop(path[-1])


def _get_path(data: dict[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = data
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _apply_aliases(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Move Distribution's names to pyreg's in one layer; both names in one layer is an error."""
    for source, target in ALIASES.items():
        found, value = _pop_path(data, source)
        if not found:
            continue
        src, dst = ".".join(source), ".".join(target)
        if isinstance(value, dict) and target == ("metrics",):  # http.debug.prometheus: {enabled, path}
            for key, sub in value.items():
                if _get_path(data, (*target, str(key)))[0]:
                    raise ConfigError(f"{where}: {src}.{key} and {dst}.{key} both given; keep one")
                _set_path(data, [*target, str(key)], sub)
            continue
        if _get_path(data, target)[0]:
            raise ConfigError(f"{where}: {src} and {dst} are the same key; keep one")
        _set_path(data, list(target), value)
    for parent in (("http", "debug"),):  # emptied by the moves above
        found, value = _get_path(data, parent)
        if found and value in ({}, None):
            _pop_path(data, parent)
    return data


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def load_config(path: str | os.PathLike[str] | None = None, *, data: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Build the configuration: defaults < file (or ``data``) < environment < ``overrides``.

    ``overrides`` maps dotted key paths (``storage.filesystem.rootdirectory``) to values; the
    ``serve`` command passes its flags this way.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        import yaml

        try:
            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
        except OSError as e:
            raise ConfigError(f"cannot read configuration file {os.fspath(path)!r}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"configuration file {os.fspath(path)!r} is not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {os.fspath(path)!r} must hold a mapping")
        raw = _apply_aliases(_deep_copy(loaded or {}), f"configuration file {os.fspath(path)!r}")
    if data is not None:
        raw = _deep_merge(raw, _apply_aliases(_deep_copy(dict(data)), "configuration"))
    ignored: list[str] = []
    for key_path, value, _name in env_overrides(os.environ if environ is None else environ, ignored):
        cls = _schema_at(tuple(key_path)) if len(key_path) == 1 and key_path[0] in _TOP_SECTIONS else None
        if isinstance(value, str) and cls is not None and dataclasses.is_dataclass(cls) and (
                value in {f.name for f in dataclasses.fields(cls)}):
            # Distribution's REGISTRY_AUTH=htpasswd / REGISTRY_STORAGE=s3: selects that sub-key
            found, section = _get_path(raw, tuple(key_path))
            section = section if found and isinstance(section, dict) else {}
            section.setdefault(value, {})
            value = section
        _set_path(raw, key_path, value)
    for dotted, value in (overrides or {}).items():
        _set_path(raw, dotted.split("."), value)
    config = _validate(_build(Config, raw, ""))
    config.ignored_env = ignored
    return config


def not_implemented_keys(config: Config) -> list[str]:
    """The key paths set to something pyreg accepts but does not act on (for one warning line)."""
    found: list[str] = []

    def leaves(value: Any, path: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                leaves(v, f"{path}.{k}")
        else:
            found.append(path)

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{prefix}[{i}]")
            return
        if not dataclasses.is_dataclass(node) or isinstance(node, type):
            return
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            path = f"{prefix}.{f.name}" if prefix else f.name
            if f.metadata.get("notimplemented"):
                if value is not None and value not in f.metadata["harmless"]:
                    leaves(value, path)
            else:
                walk(value, path)

    walk(config, "")
    return found


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain data that ``load_config(data=...)`` turns back into the same Config (keys kept as
    given that were not given are left out: a bare ``key:`` in a file means "given")."""

    def plain(node: Any) -> Any:
        if dataclasses.is_dataclass(node) and not isinstance(node, type):
            hints = _hints(type(node))
            return {f.name: plain(getattr(node, f.name)) for f in dataclasses.fields(node)
                    if not (hints[f.name] is Any and getattr(node, f.name) is None)
                    and not f.metadata.get("internal")}
        if isinstance(node, list):
            return [plain(v) for v in node]
        if isinstance(node, dict):
            return {k: plain(v) for k, v in node.items()}
        return node

    return typing.cast(dict[str, Any], plain(config))
