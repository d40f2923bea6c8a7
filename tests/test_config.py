"""registry.config: defaults, the YAML file, PYREG_* overrides, flags, and errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyreg.registry.config import (
    ConfigError,
    config_to_dict,
    load_config,
    parse_duration,
    parse_size,
    split_addr,
)


def test_defaults_without_a_file() -> None:
    c = load_config(environ={})
    assert c.addr == "127.0.0.1:5000" and (c.host, c.port) == ("127.0.0.1", 5000)
    assert c.storage.filesystem is not None and c.storage.filesystem.rootdirectory == "./data"
    assert c.storage.s3 is None and c.storage.driver == "filesystem"
    assert c.storage.delete.enabled is False
    assert c.storage.maintenance.readonly.enabled is False
    assert c.storage.maintenance.uploadpurging.age == 168 * 3600
    assert c.workers == 1 and c.auth.htpasswd is None and c.access == []


def test_full_design_example(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("""
addr: 0.0.0.0:5443
storage:
  s3: {bucket: b, region: us-east-1, regionendpoint: "http://127.0.0.1:9000", forcepathstyle: true,
       rootdirectory: /, accesskey: ak, secretkey: sk, chunksize: 10485760,
       redirect: {enabled: true, expiry: 20m}}
  delete: {enabled: true}
  maintenance: {readonly: false, uploadpurging: {age: 168h, interval: 24h}}
auth:
  htpasswd: {realm: pyreg, path: /etc/pyreg/htpasswd}
access:
  - {repository: "team/*", users: [alice], groups: [dev], actions: [pull, push]}
  - {repository: "*", anonymous: true, actions: [pull]}
tls: {certificate: /c.pem, key: /k.pem, clientcas: [/ca.pem]}
proxy: {trustforwarded: true, xaccelredirect: {enabled: false, internalprefix: /_blobs}}
""")
    c = load_config(path, environ={})
    assert c.port == 5443
    assert c.storage.driver == "s3" and c.storage.filesystem is None
    assert c.storage.s3 is not None and c.storage.s3.redirect.expiry == 1200 and c.storage.s3.forcepathstyle
    assert c.storage.delete.enabled and c.storage.maintenance.uploadpurging.interval == 86400
    assert c.auth.htpasswd is not None and c.auth.htpasswd.path == "/etc/pyreg/htpasswd"
    assert c.access[0].users == ["alice"] and c.access[1].anonymous
    assert c.tls is not None and c.tls.clientcas == ["/ca.pem"]
    assert c.proxy.trustforwarded and c.proxy.xaccelredirect.internalprefix == "/_blobs"
    # the resolved config survives a round trip (how ``serve`` hands it to workers)
    assert load_config(data=config_to_dict(c), environ={}) == c


def test_env_overrides_file_and_flags_override_env(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("addr: 127.0.0.1:6000\nstorage: {filesystem: {rootdirectory: /from/file}}\n")
    env = {"PYREG_ADDR": "127.0.0.1:7000", "PYREG_STORAGE_DELETE_ENABLED": "true",
           "PYREG_STORAGE_MAINTENANCE_READONLY_ENABLED": "yes",
           "PYREG_STORAGE_MAINTENANCE_UPLOADPURGING_AGE": "2h",
           "PYREG_REGISTRY": "not a config key: the client's own variable", "HOME": "/x"}
    c = load_config(path, environ=env)
    assert c.addr == "127.0.0.1:7000" and c.storage.delete.enabled
    assert c.storage.maintenance.readonly.enabled and c.storage.maintenance.uploadpurging.age == 7200
    assert c.storage.filesystem is not None and c.storage.filesystem.rootdirectory == "/from/file"
    c = load_config(path, environ=env, overrides={"addr": "127.0.0.1:8000",
                                                  "storage.filesystem.rootdirectory": "/flag"})
    assert c.addr == "127.0.0.1:8000"
    assert c.storage.filesystem is not None and c.storage.filesystem.rootdirectory == "/flag"


def test_env_selects_s3() -> None:
    c = load_config(environ={"PYREG_STORAGE_S3_BUCKET": "bkt", "PYREG_STORAGE_S3_CHUNKSIZE": "5MiB",
                             "PYREG_STORAGE_S3_REDIRECT_ENABLED": "true"})
    assert c.storage.s3 is not None and c.storage.s3.bucket == "bkt"
    assert c.storage.s3.chunksize == 5 * 1024 * 1024 and c.storage.s3.redirect.enabled
    assert c.storage.filesystem is None


@pytest.mark.parametrize("data,env,match", [
    ({"storage": {"filesytem": {}}}, {}, "storage.filesytem"),
    ({"storage": {"delete": {"enabled": "maybe"}}}, {}, "storage.delete.enabled"),
    ({"storage": {"maintenance": {"uploadpurging": {"age": "soon"}}}}, {}, "uploadpurging.age"),
    ({"addr": "nonsense"}, {}, "addr"),
    ({"workers": 0}, {}, "workers"),
    ({"storage": {"filesystem": {}, "s3": {"bucket": "b"}}}, {}, "exactly one driver"),
    ({"storage": {"s3": {"region": "x"}}}, {}, "storage.s3.bucket"),
    ({"access": [{"repository": "*", "actions": ["fly"]}]}, {}, r"access\[0\].actions"),
    ({"access": [{"repo": "*"}]}, {}, r"access\[0\].repo"),
    ({"tls": {"certificate": "/c"}}, {}, "tls"),
    ({"log": {"level": "loud"}}, {}, "log.level"),
    ({}, {"PYREG_STORAGE_BOGUS": "1"}, "PYREG_STORAGE_BOGUS"),
    ({}, {"PYREG_WORKERS": "many"}, "workers"),
])
def test_errors_name_the_key(data: dict, env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(data=data, environ=env)


def test_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yml", environ={})
    bad = tmp_path / "bad.yml"
    bad.write_text("addr: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad, environ={})


def test_scalars() -> None:
    assert parse_duration("168h") == 168 * 3600
    assert parse_duration("1h30m") == 5400 and parse_duration("500ms") == 0.5 and parse_duration(3) == 3
    assert parse_size("10MiB") == 10 * 1024 * 1024 and parse_size(5) == 5
    assert split_addr("[::1]:5000") == ("::1", 5000) and split_addr(":5000") == ("0.0.0.0", 5000)
    with pytest.raises(ConfigError):
        parse_duration("-1")
    with pytest.raises(ConfigError):
        parse_size("ten")


def test_readonly_shorthand() -> None:
    c = load_config(data={"storage": {"maintenance": {"readonly": True}}}, environ={})
    assert c.storage.maintenance.readonly.enabled
