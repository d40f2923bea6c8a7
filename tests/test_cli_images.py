"""Issue 12's image habits, as docker shows them: ``images`` (relative CREATED, docker's size units,
``--filter``, ``--digests``, ``--no-trunc``, ``-a``), the warning for an image of another platform
(pull and run), and docker's number and time formats (storage/units.py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from pyreg.storage.graph import Platform
from pyreg.storage.units import bytes_size, format_time_ns, human_duration, human_size, parse_time
from tests.fixtures.client import ClientEnv, tar_layer, write_oci_layout

HOST = Platform.host()
OTHER_ARCH = "arm64" if HOST.architecture != "arm64" else "amd64"


class Image:
    """An image with a chosen creation date, labels and architecture (tests.fixtures.client's
    MemImage shape, so write_oci_layout takes it)."""

    def __init__(self, files: dict[str, bytes], created: float | None = None,
                 labels: dict[str, str] | None = None, arch: str | None = None) -> None:
        self.layers = [tar_layer(files, compress=False)]
        config: dict[str, Any] = {"architecture": arch or HOST.architecture, "os": "linux",
                                  "config": {"Cmd": ["sh"], "Labels": labels or {}},
                                  "rootfs": {"type": "layers", "diff_ids": [d for _, d in self.layers]}}
        if created is not None:
            config["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
        self.config = json.dumps(config).encode()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": self.config_digest, "size": len(self.config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": "sha256:" + hashlib.sha256(b).hexdigest(), "size": len(b)}
                       for b, _ in self.layers],
        }).encode()

    @property
    def manifest_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()

    @property
    def config_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.config).hexdigest()

    @property
    def size(self) -> int:
        return len(self.config) + sum(len(b) for b, _ in self.layers)

    def blobs(self) -> dict[str, bytes]:
        out = {"sha256:" + hashlib.sha256(b).hexdigest(): b for b, _ in self.layers}
        out[self.config_digest] = self.config
        out[self.manifest_digest] = self.manifest
        return out

    def store_as(self, store_root: Path, name: str) -> None:
        """Into the local store under ``name``, as a pull leaves it."""
        from pyreg.storage.localstore import LocalStore

        store = LocalStore(store_root)
        for digest, data in self.blobs().items():
            store.put_blob(data, digest)
        store.tag(name, self.manifest_digest, "application/vnd.oci.image.manifest.v1+json",
                  len(self.manifest))


# ------------------------------------------------------------------------------ images


@pytest.fixture
def three(client_env: ClientEnv) -> dict[str, Image]:
    now = time.time()
    images = {
        "new": Image({"new": os.urandom(1_500_000)}, now - 2 * 3600, {"tier": "web"}),
        "old": Image({"old": b"o" * 10}, now - 21 * 86400, {"tier": "db"}),
        "gone": Image({"gone": b"g"}, now - 2 * 86400),
    }
    images["new"].store_as(client_env.store, "localhost:5000/team/new:1")
    images["old"].store_as(client_env.store, "localhost:5000/team/old:1")
    gone = images["gone"]
    gone.store_as(client_env.store, f"localhost:5000/team/gone@{gone.manifest_digest}")
    return images


def test_images_table_as_docker(client_env: ClientEnv, three: dict[str, Image]) -> None:
    lines = client_env.run("images").stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    rows = [line.split("   ") for line in lines[1:]]
    rows = [[c.strip() for c in r if c.strip()] for r in rows]
    assert [r[0] for r in rows] == ["localhost:5000/team/new", "localhost:5000/team/gone",
                                    "localhost:5000/team/old"]  # newest first
    assert [r[3] for r in rows] == ["2 hours ago", "2 days ago", "3 weeks ago"]
    new_size = three["new"].size
    assert 1_505_000 < new_size < 1_514_999  # the tar of 1,500,000 bytes + config: 3 digits, 1.51
    assert rows[0][4] == "1.51MB" == human_size(new_size)
    assert all(re.fullmatch(r"\d+(\.\d+)?(B|kB|MB)", r[4]) for r in rows), rows
    assert rows[1][1] == "<none>" and rows[0][2] == three["new"].config_digest[7:19]
    no_trunc = client_env.run("images", "--no-trunc").stdout
    assert three["old"].config_digest in no_trunc
    assert client_env.run("images", "-q", "--no-trunc").stdout.split()[0] == three["new"].config_digest
    digests = client_env.run("images", "--digests").stdout.splitlines()
    assert digests[0].split()[2] == "DIGEST" and three["gone"].manifest_digest in digests[2]
    assert client_env.run("images", "-a").stdout == client_env.run("images").stdout
    fmt = client_env.run("images", "--format", "{{.Repository}} {{.CreatedSince}} {{.Size}}").stdout
    assert fmt.splitlines()[0] == f"localhost:5000/team/new 2 hours ago {human_size(new_size)}"


def test_images_filters(client_env: ClientEnv, three: dict[str, Image]) -> None:
    def names(*args: str) -> list[str]:
        out = client_env.run("images", "--format", "{{.Repository}}", *args).stdout.split()
        return [n.rsplit("/", 1)[-1] for n in out]

    assert names("-f", "reference=team/new") == ["new"]  # without the registry, as familiar names
    assert names("-f", "reference=localhost:5000/team/*") == ["new", "gone", "old"]
    assert names("-f", "reference=team/*:1") == ["new", "old"]
    assert names("-f", "reference=*") == []  # '*' does not cross '/', as Go's path.Match
    assert names("-f", "reference=team/new", "-f", "reference=team/old") == ["new", "old"]
    assert names("team/old") == ["old"]  # the positional REPOSITORY[:TAG]
    assert names("-f", "dangling=true") == ["gone"]
    assert names("-f", "dangling=false") == ["new", "old"]
    assert names("-f", "before=localhost:5000/team/new:1") == ["gone", "old"]
    assert names("-f", "since=team/old:1") == ["new", "gone"]
    assert names("-f", f"since={three['gone'].config_digest[7:19]}") == ["new"]  # an ID prefix
    assert names("-f", "label=tier") == ["new", "old"]
    assert names("-f", "label=tier=db") == ["old"]
    assert names("-f", "label=tier", "-f", "dangling=false", "-f", "reference=team/o*") == ["old"]
    for bad, needle in ((["-f", "colour=red"], "invalid filter"), (["-f", "before=nothing"], "no such image"),
                        (["-f", "dangling=maybe"], "true or false")):
        proc = client_env.run("images", *bad, check=False)
        assert proc.returncode == 1 and needle in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------ platform warning


def test_pull_warns_for_another_platform(pyreg_factory: Any, client_env: ClientEnv, tmp_path: Path) -> None:
    server = pyreg_factory()
    foreign = Image({"f": b"x"}, time.time(), arch=OTHER_ARCH)
    native = Image({"n": b"y"}, time.time())
    for name, image in (("foreign", foreign), ("native", native)):
        client_env.run("push", str(write_oci_layout(tmp_path / name, image)),  # type: ignore[arg-type]
                       f"{server.host}/team/{name}:1")
    warning = (f"WARNING: The requested image's platform (linux/{OTHER_ARCH}) does not match the "
               f"detected host platform ({HOST})")
    pulled = client_env.run("pull", "--no-extract", f"{server.host}/team/foreign:1")
    assert warning in pulled.stderr and "Traceback" not in pulled.stderr
    pulled = client_env.run("pull", "--no-extract", f"{server.host}/team/native:1")
    assert "WARNING" not in pulled.stderr
    asked = client_env.run("pull", "--no-extract", "--platform", f"linux/{OTHER_ARCH}",
                           f"{server.host}/team/foreign:1")
    assert "WARNING" not in asked.stderr  # asked for: no surprise to warn about


@pytest.mark.root
def test_run_warns_for_another_platform(runtime_env: Any) -> None:
    env = runtime_env
    foreign = Image({"f": b"x"}, time.time(), arch=OTHER_ARCH)
    foreign.store_as(Path(env.env["PYREG_STORE"]), "registry.invalid:5000/team/foreign:1")
    for _ in range(2):  # the second from runtime/images.py's start-up cache: it warns as well
        proc = env.run("run", "--rm", "registry.invalid:5000/team/foreign:1", "/nothing")
        assert f"WARNING: The requested image's platform (linux/{OTHER_ARCH}) does not match" in proc.stderr
        assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------ docker's formats


def test_docker_size_and_duration_formats() -> None:
    assert [human_size(n) for n in (0, 999, 1000, 7_549_000, 1_500_000_000, 123_456)] == \
        ["0B", "999B", "1kB", "7.55MB", "1.5GB", "123kB"]
    assert [bytes_size(n) for n in (0, 1024, 2_048_000, 8 << 30)] == ["0B", "1KiB", "1.953MiB", "8GiB"]
    assert [human_duration(s) for s in (0, 1, 30, 60, 119, 3599, 3600, 5400, 3 * 86400, 20 * 86400,
                                        90 * 86400, 800 * 86400)] == [
        "Less than a second", "1 second", "30 seconds", "About a minute", "About a minute", "59 minutes",
        "About an hour", "2 hours", "3 days", "2 weeks", "3 months", "2 years"]


def test_docker_times() -> None:
    now = 1_714_557_600.0  # 2024-05-01T10:00:00Z
    assert parse_time("2024-05-01T10:00:00Z") == int(now) * 10**9
    assert parse_time("2024-05-01T12:00:00.5+02:00") == int(now) * 10**9 + 500_000_000
    assert parse_time("1714557600.000000001") == int(now) * 10**9 + 1
    assert parse_time("10m", now=now) == int(now - 600) * 10**9
    assert parse_time("1h30m", now=now) == int(now - 5400) * 10**9
    assert format_time_ns(int(now) * 10**9 + 5) == "2024-05-01T10:00:00.000000005Z"
    for bad in ("", "yesterday", "-5m", "2024-13-01", "2024-02-30T00:00:00Z", "1e9", "10 m"):
        with pytest.raises(ValueError):
            parse_time(bad)


# ------------------------------------------------------------------------------ progress


def _pull_on_a_terminal(client_env: ClientEnv, ref: str) -> str:
    """``pyreg pull REF`` with stderr on a pseudo-terminal (rich's bars): what it drew."""
    import pty
    import subprocess
    import sys

    from tests.fixtures.client import REPO_ROOT

    master, slave = pty.openpty()
    env = dict(client_env.env, COLUMNS="160", TERM="xterm")
    proc = subprocess.Popen([sys.executable, "-m", "pyreg", "pull", ref], env=env, cwd=REPO_ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the terminal's last writer is gone
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))


def test_pull_progress_units_eta_and_extracting(pyreg_factory: Any, client_env: ClientEnv,
                                                tmp_path: Path) -> None:
    server = pyreg_factory()
    image = Image({"big": os.urandom(1_500_000)}, time.time())
    client_env.run("push", str(write_oci_layout(tmp_path / "img", image)),  # type: ignore[arg-type]
                   f"{server.host}/team/big:1")
    layer = json.loads(image.manifest)["layers"][0]
    short, size = layer["digest"][7:19], human_size(layer["size"])
    # plain lines (not a terminal): one per blob, docker's units, the extraction said
    plain = client_env.run("pull", f"{server.host}/team/big:1").stdout
    assert f"{short}: pulled {size}, extracted" in plain, plain
    # bars on a terminal: done/total in docker's units, time left, and the extraction
    client_env.run("rmi", f"{server.host}/team/big:1")
    client_env.run("prune")
    drawn = _pull_on_a_terminal(client_env, f"{server.host}/team/big:1")
    assert f"{size}/{size}" in drawn and f"{short} pulled {size}, extracted" in drawn, drawn
    assert re.search(r"\d:\d\d:\d\d|-:--:--", drawn), drawn  # rich's time-remaining column
    assert "MiB" not in drawn
