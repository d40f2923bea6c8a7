"""The client verifies TLS for every registry, loopback included, and trusts the system store plus
``--ca-file`` / ``PYREG_CA_FILE`` / the config's ``ca_file`` / ``certs.d/<host:port>/*.crt``
(client certificates ``*.cert`` + ``*.key`` there for mutual TLS); ``--insecure`` opts out.

Against a real ``pyreg serve`` with TLS from a throw-away CA (tests/fixtures/auth.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.auth import CertificateAuthority, Issued
from tests.fixtures.client import ClientEnv, mem_image, write_oci_layout
from tests.fixtures.registry import RegistryServer, ServerPool, deep_merge


class TLSRegistry(RegistryServer):
    """``pyreg serve`` with ``tls`` configured, polled over https with the test CA."""

    def __init__(self, config: dict[str, Any], workdir: Path, ca: CertificateAuthority,
                 client: Issued | None = None) -> None:
        super().__init__(config, workdir)
        self.url = f"https://{self.host}"
        self.ca = ca
        self.client = client

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        if self.client is not None:
            ctx.load_cert_chain(str(self.client.cert), str(self.client.key))
        return ctx


@pytest.fixture
def tls_registry(tmp_path: Path, auth_ca: CertificateAuthority) -> Iterator[Callable[..., TLSRegistry]]:
    pool = ServerPool()

    def start(extra: dict[str, Any] | None = None, client: Issued | None = None) -> TLSRegistry:
        n = len(pool)
        issued = auth_ca.issue(f"server{n}")
        config = deep_merge({
            "storage": {"filesystem": {"rootdirectory": str(tmp_path / f"data-{n}")},
                        "delete": {"enabled": True}, "maintenance": {"uploadpurging": {"enabled": False}}},
            "tls": {"certificate": str(issued.cert), "key": str(issued.key)},
            "log": {"accesslog": {"disabled": True}},
        }, extra)
        return pool.start(TLSRegistry(config, tmp_path / f"server-{n}", auth_ca, client))

    yield start
    pool.stop_all()


@pytest.fixture
def tls_client(client_env: ClientEnv, tmp_path: Path) -> ClientEnv:
    """The client with its own (empty) certs.d root: nothing under /etc is read or needed."""
    (tmp_path / "certs.d").mkdir()
    client_env.env["PYREG_CERTS_D"] = str(tmp_path / "certs.d")
    client_env.env.pop("SSL_CERT_FILE", None)
    client_env.env.pop("SSL_CERT_DIR", None)
    return client_env


@pytest.fixture
def layout(tmp_path: Path) -> str:
    image = mem_image({"hello.txt": b"hello over TLS\n"}, {"etc/motd": b"verified\n"})
    write_oci_layout(tmp_path / "layout", image, "1")
    return f"{tmp_path / 'layout'}:1"


def certs_d(root: Path, host: str, ca: CertificateAuthority, client: Issued | None = None) -> Path:
    d = root / host
    d.mkdir(parents=True)
    shutil.copy(ca.cert, d / "ca.crt")
    if client is not None:
        shutil.copy(client.cert, d / "client.cert")
        shutil.copy(client.key, d / "client.key")
    return d


def push_pull(client: ClientEnv, layout: str, ref: str, *flags: str) -> None:
    pushed = json.loads(client.run("push", "--json", *flags, layout, ref).stdout)
    pulled = json.loads(client.run("pull", "--json", "--no-extract", *flags, ref).stdout)
    assert pulled["digest"] == pushed["digest"]


def assert_untrusted(proc: subprocess.CompletedProcess[str], host: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("pyreg: TLS certificate of ") and host in line and "not trusted" in line
    assert "--ca-file" in line and "certs.d" in line and "--insecure" in line


def test_ca_file_flag_env_and_config(tls_registry: Callable[..., TLSRegistry], tls_client: ClientEnv,
                                     auth_ca: CertificateAuthority, layout: str, tmp_path: Path) -> None:
    server = tls_registry()
    ref = f"{server.host}/tls/app:1"
    push_pull(tls_client, layout, ref, "--ca-file", str(auth_ca.cert))
    # the same CA through the environment, then through the client config file
    tls_client.env["PYREG_CA_FILE"] = str(auth_ca.cert)
    assert tls_client.run("tags", f"{server.host}/tls/app").stdout.split() == ["1"]
    del tls_client.env["PYREG_CA_FILE"]
    Path(tls_client.env["PYREG_CONFIG"]).write_text(json.dumps({"ca_file": str(auth_ca.cert)}))
    assert tls_client.run("tags", f"{server.host}/tls/app").stdout.split() == ["1"]
    # a --ca-file that is not there is a usage error, before anything is sent
    missing = tls_client.run("tags", "--ca-file", str(tmp_path / "nope.pem"), f"{server.host}/tls/app",
                             check=False)
    assert missing.returncode == 2 and "--ca-file" in missing.stderr


def test_untrusted_certificate_fails_even_on_loopback(tls_registry: Callable[..., TLSRegistry],
                                                      tls_client: ClientEnv, layout: str,
                                                      tmp_path: Path) -> None:
    server = tls_registry()
    ref = f"{server.host}/tls/app:1"
    assert_untrusted(tls_client.run("push", layout, ref, check=False), server.host)
    assert_untrusted(tls_client.run("pull", "--no-extract", ref, check=False), server.host)
    # a CA that did not sign the server's certificate does not help
    other = CertificateAuthority(tmp_path / "other-ca", "some other CA")
    assert_untrusted(tls_client.run("pull", "--ca-file", str(other.cert), ref, check=False), server.host)
    for host in (server.host, f"localhost:{server.port}"):
        proc = tls_client.run("catalog", host, check=False)
        assert_untrusted(proc, host)


def test_certs_d_directory(tls_registry: Callable[..., TLSRegistry], tls_client: ClientEnv,
                           auth_ca: CertificateAuthority, layout: str, tmp_path: Path) -> None:
    server = tls_registry()
    certs_d(tmp_path / "certs.d", server.host, auth_ca)
    push_pull(tls_client, layout, f"{server.host}/certsd/app:1")
    # several roots (podman's, then Docker's): the first one holding the host is used, as
    # containers/image does
    roots = [tmp_path / "no-such-root", tmp_path / "podman", tmp_path / "certs.d"]
    tls_client.env["PYREG_CERTS_D"] = os.pathsep.join(map(str, roots))
    assert tls_client.run("tags", f"{server.host}/certsd/app").stdout.split() == ["1"]
    certs_d(tmp_path / "podman", server.host, CertificateAuthority(tmp_path / "other-ca", "other CA"))
    assert_untrusted(tls_client.run("tags", f"{server.host}/certsd/app", check=False), server.host)


class HandshakeCutter:
    """A TCP relay on a free loopback port to a registry: the first ``drops`` connections that
    open with a TLS record (a ClientHello) are cut off mid-handshake (the relay reads the hello,
    then closes its side: the client reads EOF where the ServerHello should be), the rest are
    relayed both ways. ``drops=None`` cuts every TLS connection. It also keeps the first bytes
    the registry sent back on each connection that did not open with TLS (plain HTTP)."""

    def __init__(self, target: str, drops: int | None) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.drops = drops
        self.dropped = 0
        self.tls_relayed = 0
        self.plain_answers: list[bytes] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._spawn(self._accept)

    def _spawn(self, fn: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._sockets.append(conn)
            self._spawn(self._handle, conn)

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            first = conn.recv(65536)
            if not first:
                return
            tls = first[0] == 0x16  # a TLS handshake record
            with self._lock:
                cut = tls and (self.drops is None or self.dropped < self.drops)
                self.dropped += cut
                self.tls_relayed += tls and not cut
            if cut:
                conn.shutdown(socket.SHUT_WR)  # EOF for the client, mid-handshake
                while conn.recv(65536):
                    pass
                return
            with socket.create_connection(self.target, timeout=30) as upstream:
                with self._lock:
                    self._sockets.append(upstream)
                upstream.sendall(first)
                answer = bytearray()
                self._spawn(self._pipe, conn, upstream, None)
                self._pipe(upstream, conn, None if tls else answer)
                if not tls:
                    with self._lock:
                        self.plain_answers.append(bytes(answer[:64]))

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, keep: bytearray | None) -> None:
        try:
            while data := src.recv(65536):
                if keep is not None and len(keep) < 64:
                    keep += data
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for t in list(self._threads):
            t.join(timeout=30)


@pytest.fixture
def cutter() -> Iterator[Callable[[str, int | None], HandshakeCutter]]:
    made: list[HandshakeCutter] = []

    def make(target: str, drops: int | None) -> HandshakeCutter:
        made.append(HandshakeCutter(target, drops))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_tls_handshake_cut_off_is_retried(tls_registry: Callable[..., TLSRegistry], tls_client: ClientEnv,
                                          auth_ca: CertificateAuthority, layout: str, tmp_path: Path,
                                          cutter: Callable[[str, int | None], HandshakeCutter]) -> None:
    """A server that ends a TLS handshake without answering (busy, restarting) is tried again,
    as a refused connection is: a flaky push once failed here with UNEXPECTED_EOF_WHILE_READING,
    taken for a plain-HTTP server. The bare-socket plain path never carries the transfer."""
    server = tls_registry()
    relay = cutter(server.host, 2)  # more than a first contact's one retry of a refused connection
    certs_d(tmp_path / "certs.d", relay.host, auth_ca)
    push_pull(tls_client, layout, f"{relay.host}/cut/app:1")
    assert relay.dropped == 2 and relay.tls_relayed >= 1
    # plain HTTP reached the TLS server (the loopback probe, the plain paths' first request) and
    # was never answered with a success: everything moved over TLS
    assert not [a for a in relay.plain_answers if a.startswith(b"HTTP/1.1 2")], relay.plain_answers


Cutter = Callable[[str, int | None], HandshakeCutter]


def test_tls_handshake_always_cut_off_is_one_line(tls_registry: Callable[..., TLSRegistry],
                                                  tls_client: ClientEnv, auth_ca: CertificateAuthority,
                                                  layout: str, tmp_path: Path, cutter: Cutter) -> None:
    """A server that never finishes a handshake: a bounded number of tries, then one line."""
    from pyreg.storage.remote.transport import RETRIES

    server = tls_registry()
    relay = cutter(server.host, None)
    certs_d(tmp_path / "certs.d", relay.host, auth_ca)
    proc = tls_client.run("push", layout, f"{relay.host}/cut/app:1", check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert relay.host in lines[0] and "TLS connection short" in lines[0], lines[0]
    assert relay.dropped == 1 + RETRIES


def test_insecure_flag_and_list_skip_verification(tls_registry: Callable[..., TLSRegistry],
                                                  tls_client: ClientEnv, layout: str) -> None:
    server = tls_registry()
    push_pull(tls_client, layout, f"{server.host}/insecure/app:1", "--insecure")
    tls_client.env["PYREG_INSECURE_REGISTRIES"] = server.host
    assert tls_client.run("tags", f"{server.host}/insecure/app").stdout.split() == ["1"]


def test_mutual_tls_client_certificate_from_certs_d(tls_registry: Callable[..., TLSRegistry],
                                                    tls_client: ClientEnv, auth_ca: CertificateAuthority,
                                                    layout: str, tmp_path: Path) -> None:
    client = auth_ca.issue("client", server=False, client=True, hosts=())
    server = tls_registry({"tls": {"clientcas": [str(auth_ca.cert)]}}, client=client)
    ref = f"{server.host}/mtls/app:1"
    # the CA alone is not enough: the server wants a client certificate
    no_cert = tls_client.run("push", "--ca-file", str(auth_ca.cert), layout, ref, check=False)
    assert no_cert.returncode != 0 and len(no_cert.stderr.strip().splitlines()) == 1
    assert "client.cert + client.key" in no_cert.stderr
    d = certs_d(tmp_path / "certs.d", server.host, auth_ca, client)
    push_pull(tls_client, layout, ref)
    # a certificate without its key is a clear error, not a silent anonymous handshake
    (d / "client.key").unlink()
    broken = tls_client.run("tags", f"{server.host}/mtls/app", check=False)
    assert broken.returncode != 0 and "client.cert has no matching key" in broken.stderr


def test_settings_units(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                        auth_ca: CertificateAuthority) -> None:
    from pyreg.client import config
    from pyreg.client.remote import tls_context

    monkeypatch.setenv("PYREG_CONFIG", str(tmp_path / "none.json"))
    monkeypatch.delenv("PYREG_INSECURE_REGISTRIES", raising=False)
    monkeypatch.delenv("PYREG_CA_FILE", raising=False)
    monkeypatch.setenv("PYREG_CERTS_D", str(tmp_path / "certs.d"))
    # loopback may speak plain HTTP, but its certificates are verified
    assert config.plain_http_allowed("127.0.0.1:5000") and config.tls_verify("127.0.0.1:5000")
    assert not config.tls_verify("localhost:5000", insecure_flag=True)
    monkeypatch.setenv("PYREG_INSECURE_REGISTRIES", "reg.lan")
    assert not config.tls_verify("reg.lan:5000") and config.tls_verify("reg.example:5000")
    assert config.certs_dir("reg.lan:5000").path is None
    d = certs_d(tmp_path / "certs.d", "reg.lan:5000", auth_ca)
    found = config.certs_dir("reg.lan:5000")
    assert found.path == d and found.cas == (d / "ca.crt",) and found.client is None
    # one context per registry and settings, reused
    assert tls_context("reg.lan:5000") is tls_context("reg.lan:5000")
    assert tls_context("reg.lan:5000") is not tls_context("reg.lan:5000", verify=False)
    assert tls_context("reg.lan:5000").verify_mode == ssl.CERT_REQUIRED
    (d / "stray.key").write_text("x")
    with pytest.raises(ValueError, match=r"stray\.key has no matching certificate"):
        config.certs_dir("reg.lan:5000")
