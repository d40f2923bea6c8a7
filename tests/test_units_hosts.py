"""One grammar for sizes, durations, hosts and ports (storage.units, storage.netaddr), used by the
registry config, the client settings, the runtime's flags and the auth middleware alike."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

MIB10 = 10 * 1024 * 1024


def test_10M_means_one_thing_everywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``10M`` (and ``10MB``, ``10MiB``, ``10m``) is 10,485,760 bytes in every place that reads a size."""
    from pyreg.client import config as client_config
    from pyreg.registry.config import load_config
    from pyreg.registry.config import parse_size as registry_size
    from pyreg.runtime.spec import parse_bytes
    from pyreg.storage import units

    monkeypatch.setenv("PYREG_CONFIG", str(tmp_path / "absent.yml"))
    for text in ("10M", "10m", "10MB", "10mb", "10MiB"):
        assert units.size_bytes(text) == MIB10
        assert units.parse_size(text) == MIB10
        assert registry_size(text) == MIB10
        assert parse_bytes(text) == MIB10  # runtime: --memory, run.memory
        monkeypatch.setenv("PYREG_CHUNK_SIZE", text)
        assert client_config.chunk_size() == MIB10
        monkeypatch.setenv("PYREG_MAX_CONFIG_SIZE", text)
        assert client_config.max_config_size() == MIB10
        cfg = load_config(data={"storage": {"s3": {"bucket": "b", "chunksize": text}}}, environ={})
        assert cfg.storage.s3 is not None and cfg.storage.s3.chunksize == MIB10
    assert units.size_bytes("1.5k") == 1536 and units.size_bytes("100") == 100 and units.size_bytes(7) == 7
    for bad in ("ten", "-1", "10X", "", True):
        with pytest.raises(ValueError):
            units.size_bytes(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_bytes("0")


def test_durations_read_alike() -> None:
    """The registry config and the S3 driver's redirect expiry read durations with one grammar."""
    from pyreg.registry.config import parse_duration as registry_duration
    from pyreg.storage.s3 import s3_config_from_dict
    from pyreg.storage.units import parse_duration

    for text, seconds in (("20m", 1200), ("1h30m", 5400), ("500ms", 0.5), ("2d", 172800), ("15", 15)):
        assert parse_duration(text) == seconds == registry_duration(text)
    # the driver once read "1h30m" but rejected "1d" and "500ms"; now it reads what the config reads
    s3 = s3_config_from_dict({"bucket": "b", "redirect": {"enabled": True, "expiry": "1d"}})
    assert s3.redirect_expiry == 86400
    for bad in ("ten minutes", "-1", "1x", ""):
        with pytest.raises(ValueError):
            parse_duration(bad)


LOOPBACK = ["127.0.0.1", "127.0.0.0", "127.255.255.254", "127.1.2.3:80", "::1", "[::1]", "[::1]:5000",
            "::ffff:127.0.0.1", "[::ffff:127.0.0.1]:5000", "localhost", "localhost:5000", "LOCALHOST",
            "registry.localhost:443", "ip6-localhost"]
NOT_LOOPBACK = ["0.0.0.0", "0.0.0.0:5000", "::", "[::]:5000", "128.0.0.1", "192.0.2.1:5000", "::2",
                "::ffff:192.0.2.1", "registry.example", "localhost.example", "[::1", ""]


@pytest.mark.parametrize("addr", LOOPBACK + NOT_LOOPBACK)
def test_loopback_detection_agrees(addr: str) -> None:
    """The server's "no auth on a public address" warning and the client's "plain HTTP to loopback"
    are one function, so they agree on every spelling of an address."""
    from pyreg.client.config import is_loopback as client_is_loopback
    from pyreg.registry.auth.middleware import is_loopback as server_is_loopback
    from pyreg.storage.netaddr import is_loopback

    expected = addr in LOOPBACK
    assert is_loopback(addr) is expected
    assert client_is_loopback(addr) is expected and server_is_loopback(addr) is expected


def test_host_port_splitting() -> None:
    from pyreg.registry.config import ConfigError, split_addr
    from pyreg.storage.netaddr import host_of, split_host_port

    assert split_host_port("[::1]:5000") == ("::1", 5000)
    assert split_host_port("::1") == ("::1", None)
    assert split_host_port("fe80::1%eth0") == ("fe80::1%eth0", None)
    assert split_host_port("registry.example:443") == ("registry.example", 443)
    assert split_host_port("registry.example") == ("registry.example", None)
    assert host_of("[::1]:5000") == "::1" and host_of("localhost:5000") == "localhost"
    assert split_addr(":5000") == ("0.0.0.0", 5000) and split_addr("[::1]:5000") == ("::1", 5000)
    for bad in ("a:b:c", "host:99999", "[::1]:x", "host:"):
        with pytest.raises(ValueError):
            split_host_port(bad)
    with pytest.raises(ConfigError):
        split_addr("localhost")
