"""TLS served directly by ``pyreg serve`` (tls.certificate/key, tls.clientcas for mTLS, tls.hsts),
with a throw-away CA the tests create, and skopeo verifying it (``--cert-dir``)."""

from __future__ import annotations

import hashlib
import shutil
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.auth import USERS, CertificateAuthority
from tests.fixtures.peers import Skopeo, tagged
from tests.fixtures.registry import RegistryServer, ServerPool
from tests.images import TestImage, read_layout

pytestmark = pytest.mark.peers


class TLSServer(RegistryServer):
    """``pyreg serve`` with TLS on: polled over https with the test CA (and a client cert for mTLS)."""

    def __init__(
        self,
        config: dict[str, Any],
        workdir: Path,
        ca: CertificateAuthority,
        client_cert: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(config, workdir)
        self.url = f"https://{self.host}"
        self.ca = ca
        self.client_cert = client_cert

    def context(self, with_client_cert: bool = True) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        if with_client_cert and self.client_cert:
            ctx.load_cert_chain(*self.client_cert)
        return ctx


@pytest.fixture
def tls_server(
    make_registry_config: Any, auth_ca: CertificateAuthority, tmp_path: Path, htpasswd_users: Path
) -> Any:
    pool = ServerPool()

    def make(extra: dict[str, Any] | None = None, client_cert: tuple[str, str] | None = None) -> TLSServer:
        issued = auth_ca.issue(f"server{len(pool)}")
        base = {
            "tls": {"certificate": str(issued.cert), "key": str(issued.key)},
            "auth": {"htpasswd": {"path": str(htpasswd_users)}},
        }
        config = make_registry_config(base)
        for key, value in (extra or {}).items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
        return pool.start(TLSServer(config, tmp_path / f"tls-server-{len(pool)}", auth_ca, client_cert))

    yield make
    pool.stop_all()


@pytest.fixture
def storage_config(tmp_path: Path) -> dict[str, Any]:
    """Auth does not touch storage: filesystem only (the API suites cover the drivers)."""
    return {"filesystem": {"rootdirectory": str(tmp_path / "registry-data")}}


def cert_dir(ca: CertificateAuthority, where: Path, client: Any = None) -> Path:
    """A containers/image certs directory: ``*.crt`` CAs, ``*.cert`` + ``*.key`` the client's."""
    where.mkdir(parents=True, exist_ok=True)
    shutil.copy(ca.cert, where / "ca.crt")
    if client is not None:
        shutil.copy(client.cert, where / "client.cert")
        shutil.copy(client.key, where / "client.key")
    return where


def test_skopeo_verifies_pyreg_tls(
    tls_server: Any, auth_ca: CertificateAuthority, skopeo: Skopeo, busybox_image: TestImage, tmp_path: Path
) -> None:
    server = tls_server()
    certs = cert_dir(auth_ca, tmp_path / "certs")
    skopeo.run(
        "login",
        "--cert-dir",
        str(certs),
        "--authfile",
        str(skopeo.authfile),
        "-u",
        "alice",
        "--password-stdin",
        server.host,
        input=USERS["alice"].encode(),
    )
    ref = tagged(server.host, "tls/busybox", "1")
    skopeo.copy(busybox_image.oci_ref, ref, "--dest-tls-verify=true", "--dest-cert-dir", str(certs))
    skopeo.copy(ref, f"oci:{tmp_path / 'out'}:1", "--src-tls-verify=true", "--src-cert-dir", str(certs))
    assert read_layout(tmp_path / "out", "1").manifest_digest == busybox_image.manifest_digest
    # without the CA the certificate is not trusted
    r = skopeo.run("inspect", "--raw", "--authfile", str(skopeo.authfile), ref, check=False)
    assert r.returncode != 0 and "certificate" in r.stderr
    # plain HTTP to the TLS port gets nowhere
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{server.host}/v2/", timeout=5)


def test_hsts_is_off_by_default_and_configurable(tls_server: Any) -> None:
    plain = tls_server()
    r = httpx.get(f"{plain.url}/v2/", verify=plain.context(), auth=("alice", USERS["alice"]))
    assert r.status_code == 200
    assert "strict-transport-security" not in r.headers
    hsts = tls_server({"tls": {"hsts": "8760h"}})
    r = httpx.get(f"{hsts.url}/v2/", verify=hsts.context())
    assert r.status_code == 401  # even refusals carry it
    assert r.headers["strict-transport-security"] == "max-age=31536000"


def test_mutual_tls(
    tls_server: Any, auth_ca: CertificateAuthority, skopeo: Skopeo, busybox_image: TestImage, tmp_path: Path
) -> None:
    client = auth_ca.issue("client", server=False, client=True, hosts=())
    second_ca = CertificateAuthority(tmp_path / "second-ca", "second client CA")
    server = tls_server(
        {"tls": {"clientcas": [str(second_ca.cert), str(auth_ca.cert)]}},
        client_cert=(str(client.cert), str(client.key)),
    )
    r = httpx.get(f"{server.url}/v2/", verify=server.context(), auth=("alice", USERS["alice"]))
    assert r.status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.url}/v2/", verify=server.context(with_client_cert=False), timeout=5)
    # every CA of tls.clientcas is trusted, and no other
    second = second_ca.issue("client2", server=False, client=True, hosts=())
    ctx = server.context(with_client_cert=False)
    ctx.load_cert_chain(str(second.cert), str(second.key))
    assert httpx.get(f"{server.url}/v2/", verify=ctx, auth=("alice", USERS["alice"])).status_code == 200
    other = CertificateAuthority(tmp_path / "other-ca").issue("client", server=False, client=True, hosts=())
    ctx = server.context(with_client_cert=False)
    ctx.load_cert_chain(str(other.cert), str(other.key))
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.url}/v2/", verify=ctx, timeout=5)
    ref = tagged(server.host, "mtls/busybox", "1")
    with_cert = cert_dir(auth_ca, tmp_path / "certs", client)
    skopeo.copy(
        busybox_image.oci_ref,
        ref,
        "--dest-tls-verify=true",
        "--dest-cert-dir",
        str(with_cert),
        "--dest-creds",
        "alice:" + USERS["alice"],
    )
    without = cert_dir(auth_ca, tmp_path / "certs-no-client")
    r2 = skopeo.copy(
        busybox_image.oci_ref,
        ref,
        "--dest-tls-verify=true",
        "--dest-cert-dir",
        str(without),
        "--dest-creds",
        "alice:" + USERS["alice"],
        check=False,
    )
    assert r2.returncode != 0


def test_pyreg_client_over_tls(
    tls_server: Any, auth_ca: CertificateAuthority, client_env: Any, busybox_image: TestImage
) -> None:
    """pyreg's own client logs in, pushes and pulls over TLS, trusting the CA through SSL_CERT_FILE
    (the system-store route: OpenSSL's default verify paths; loopback is verified like any host)."""
    server = tls_server()
    client_env.env["SSL_CERT_FILE"] = str(auth_ca.cert)
    client_env.run("login", server.host, "-u", "alice", "--password-stdin", input=USERS["alice"] + "\n")
    ref = f"{server.host}/tls/pyreg:1"
    client_env.run("push", "-q", f"{busybox_image.layout}:{busybox_image.tag}", ref)
    client_env.run("pull", "-q", "--no-extract", ref)
    r = httpx.get(
        f"{server.url}/v2/tls/pyreg/manifests/1",
        verify=server.context(),
        auth=("alice", USERS["alice"]),
        headers={"Accept": str(busybox_image.manifest_json["mediaType"])},
    )
    assert r.content == busybox_image.manifest
    client_env.run("logout", server.host)
    assert client_env.run("pull", "-q", "--no-extract", ref, check=False).returncode != 0


def test_a_trusted_blob_over_tls_is_encrypted_not_sent_by_the_kernel(tls_server: Any) -> None:
    """Whole GETs of a blob the server trusts go out with sendfile on plain HTTP
    (registry/zerocopy.py); under TLS the socket carries ciphertext, so they must not."""
    server = tls_server()
    auth = ("alice", USERS["alice"])
    data = hashlib.sha256(b"tls").digest() * (3 * 32768 + 5)  # > 3 MiB: served unhashed once trusted
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with httpx.Client(verify=server.context(), auth=auth, timeout=60) as client:
        r = client.post(f"{server.url}/v2/tls/blob/blobs/uploads/", params={"digest": digest}, content=data)
        assert r.status_code == 201, r.text
        served = set()
        for _ in range(50):  # the first GET hashes it (a just-published file has no token yet)
            r = client.get(f"{server.url}/v2/tls/blob/blobs/{digest}")
            assert r.status_code == 200 and r.content == data
            metrics = client.get(f"{server.url}/metrics").text
            served = {line for line in metrics.splitlines()
                      if line.startswith('pyreg_blob_verifications_total{how="trusted_get"}')}
            if served and not served.pop().endswith(" 0.0"):
                break
            time.sleep(0.02)
        else:
            raise AssertionError("never served as trusted")
        r = client.get(f"{server.url}/v2/tls/blob/blobs/{digest}")
        assert r.status_code == 200 and r.content == data
