"""Blob integrity under attack: no request, however it races others, stores a blob under a digest
its bytes do not have (issue 9, "Integrity").

Every race is between real processes: two ``pyreg serve`` processes (the first with two workers)
on one storage, the filesystem directory or one S3 bucket on moto_server. A "holder" request
streams its body in two parts and waits between them, so it is provably in flight when the
"racer" arrives on the *other* server process: the racer must be refused (416
BLOB_UPLOAD_INVALID), never interleaved, and whatever is stored must hash to its name.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyreg.storage.filesystem import RACY_NS
from tests.fixtures.registry import REPO_ROOT, RegistryServer, image_manifest, sha256

V2 = "docker/registry/v2"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MiB = 1 << 20


def payload(size: int, seed: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{i}".encode()).digest() * 64
        i += 1
    return bytes(out[:size])


class Storage:
    """White-box access to the shared storage, to see a session's lock and to damage blobs."""

    def __init__(self, storage_config: dict[str, Any], request: pytest.FixtureRequest) -> None:
        self.config = storage_config
        self.root: Path | None = None
        self.s3: Any = None
        if "filesystem" in storage_config:
            self.root = Path(storage_config["filesystem"]["rootdirectory"])
        else:
            self.s3 = request.getfixturevalue("moto_server").client()
            section = storage_config["s3"]
            self.bucket = section["bucket"]
            self.prefix = section["rootdirectory"].strip("/") + "/"

    def exists(self, path: str) -> bool:
        if self.root is not None:
            return (self.root / path).exists()
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self.prefix + path)
        except Exception:  # any miss
            return False
        return True

    def write(self, path: str, data: bytes) -> None:
        if self.root is not None:
            target = self.root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        else:
            self.s3.put_object(Bucket=self.bucket, Key=self.prefix + path, Body=data)

    def read(self, path: str) -> bytes:
        if self.root is not None:
            return (self.root / path).read_bytes()
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=self.prefix + path)["Body"].read())

    @staticmethod
    def lock(name: str, upload_id: str) -> str:
        return f"{V2}/pyreg-locks/uploads/{name}/{upload_id}"

    @staticmethod
    def blob(digest: str) -> str:
        return f"{V2}/blobs/sha256/{digest[7:9]}/{digest[7:]}/data"


@pytest.fixture
def storage(storage_config: dict[str, Any], request: pytest.FixtureRequest) -> Storage:
    return Storage(storage_config, request)


def lock_ttl_extra(storage_config: dict[str, Any], ttl: str = "3s") -> dict[str, Any]:
    return {"storage": {"s3": {"lockttl": ttl}}} if "s3" in storage_config else {}


@pytest.fixture
def servers(make_registry_server: Callable[..., RegistryServer],
            storage_config: dict[str, Any]) -> tuple[RegistryServer, RegistryServer]:
    """Two server processes on one storage; the first runs two workers."""
    extra = lock_ttl_extra(storage_config)
    return make_registry_server(extra, workers=2), make_registry_server(extra)


class Held:
    """A request whose body goes out in two parts; the second waits for ``release``."""

    def __init__(self, method: str, url: str, first: bytes, second: bytes,
                 params: dict[str, str] | None = None) -> None:
        self._go = threading.Event()
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None

        def body() -> Iterator[bytes]:
            yield first
            self._go.wait(120)
            yield second

        def run() -> None:
            try:
                with httpx.Client(timeout=120) as client:
                    self.response = client.request(method, url, params=params, content=body(),
                                                   headers={"Content-Type": "application/octet-stream"})
            except BaseException as e:  # reported by release()
                self.error = e

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def abandon(self) -> None:
        """Let the body finish after its server died (the request fails; that is the point)."""
        self._go.set()
        self._thread.join(120)

    def release(self) -> httpx.Response:
        self._go.set()
        self._thread.join(120)
        assert self.error is None, self.error
        assert self.response is not None
        return self.response


def wait_for(condition: Callable[[], bool], seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def new_session(base: str, name: str) -> tuple[str, str]:
    r = httpx.post(f"{base}/v2/{name}/blobs/uploads/")
    assert r.status_code == 202, r.text
    return r.headers["Location"], r.headers["Docker-Upload-UUID"]


def url(base: str, location: str) -> str:
    return location if location.startswith("http") else base + location


def assert_refused(r: httpx.Response) -> None:
    assert r.status_code == 416, (r.status_code, r.text)
    assert r.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"


def push(base: str, name: str, data: bytes) -> None:
    r = httpx.post(f"{base}/v2/{name}/blobs/uploads/", params={"digest": sha256(data)}, content=data)
    assert r.status_code == 201, r.text


def assert_blob(base: str, name: str, digest: str, expected: bytes | None = None) -> None:
    r = httpx.get(f"{base}/v2/{name}/blobs/{digest}", timeout=60)
    assert r.status_code == 200, r.text
    assert sha256(r.content) == digest
    if expected is not None:
        assert r.content == expected


# -- the reported attack and its siblings --------------------------------------------------------


def test_patch_racing_a_streamed_put_is_refused(servers: tuple[RegistryServer, RegistryServer],
                                                storage: Storage) -> None:
    """The report: a PATCH sent while ``PUT ?digest=`` streams must not reach the committed bytes."""
    a, b = servers
    name = "attacker/repo"
    honest = payload(2 * MiB + 11, seed=1)
    digest = sha256(honest)
    location, upload_id = new_session(a.url, name)
    put = Held("PUT", url(a.url, location), honest[:MiB], honest[MiB:], params={"digest": digest})
    wait_for(lambda: storage.exists(Storage.lock(name, upload_id)))  # the holder is in
    racer = httpx.patch(url(b.url, location), content=b"POISON" * 1000,
                        headers={"Content-Type": "application/octet-stream"})
    r = put.release()
    assert r.status_code == 201, r.text
    assert_blob(b.url, name, digest, honest)  # before the fix: "digest did not match"
    assert storage.read(Storage.blob(digest)) == honest
    assert_refused(racer)
    # An honest push of the same digest elsewhere links exactly those bytes.
    assert httpx.post(f"{b.url}/v2/victim/app/blobs/uploads/", params={"digest": digest},
                      content=honest).status_code == 201
    assert_blob(a.url, "victim/app", digest, honest)


@pytest.mark.parametrize("racer_kind", ["put", "patch", "delete", "status"])
def test_requests_racing_a_streamed_patch_are_refused(servers: tuple[RegistryServer, RegistryServer],
                                                      storage: Storage, racer_kind: str) -> None:
    """PUT, PATCH, cancel and status against a session whose chunk is still arriving: refused;
    the chunk lands whole and the upload finishes with exactly its bytes."""
    a, b = servers
    name = f"race/{racer_kind}"
    data = payload(MiB + 333, seed=2)
    location, upload_id = new_session(a.url, name)
    patch = Held("PATCH", url(a.url, location), data[:1000], data[1000:])
    wait_for(lambda: storage.exists(Storage.lock(name, upload_id)))  # the holder is in
    target = url(b.url, location)
    if racer_kind == "put":
        racer = httpx.put(target, params={"digest": sha256(data[:1000] + b"X")}, content=b"X")
    elif racer_kind == "patch":
        racer = httpx.patch(target, content=b"Y" * 10,
                            headers={"Content-Range": f"{len(data)}-{len(data) + 9}"})
    elif racer_kind == "delete":
        racer = httpx.delete(target)
    else:
        racer = httpx.get(target)
    r = patch.release()
    assert_refused(racer)
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    done = httpx.put(url(b.url, r.headers["Location"]), params={"digest": sha256(data)})
    assert done.status_code == 201, done.text
    assert_blob(a.url, name, sha256(data), data)
    assert not storage.exists(Storage.lock(name, upload_id))


def test_put_racing_put_stores_only_verified_bytes(servers: tuple[RegistryServer, RegistryServer],
                                                   storage: Storage) -> None:
    a, b = servers
    name = "race/putput"
    first, other = payload(MiB + 5, seed=3), payload(700, seed=4)
    location, upload_id = new_session(a.url, name)
    put = Held("PUT", url(a.url, location), first[:100], first[100:], params={"digest": sha256(first)})
    wait_for(lambda: storage.exists(Storage.lock(name, upload_id)))  # the holder is in
    racer = httpx.put(url(b.url, location), params={"digest": sha256(other)}, content=other)
    assert_refused(racer)
    assert put.release().status_code == 201
    assert_blob(b.url, name, sha256(first), first)
    assert httpx.head(f"{a.url}/v2/{name}/blobs/{sha256(other)}").status_code == 404


def test_many_concurrent_patches_on_one_session(servers: tuple[RegistryServer, RegistryServer],
                                                storage: Storage) -> None:
    """A burst of PATCHes with Content-Range, from threads, to both servers (three processes):
    each either lands whole at its offset or is refused; the blob is the ordered chunks."""
    name = "race/burst"
    chunks = [payload(64 * 1024, seed=10 + i) for i in range(12)]
    location, _ = new_session(servers[0].url, name)
    offset, stored = 0, b""
    for chunk in chunks:
        results: list[httpx.Response] = []

        def send(base: str, chunk: bytes = chunk, start: int = offset,
                 results: list[httpx.Response] = results) -> None:
            results.append(httpx.patch(url(base, location), content=chunk, timeout=60, headers={
                "Content-Range": f"{start}-{start + len(chunk) - 1}"}))

        threads = [threading.Thread(target=send, args=(s.url,)) for s in (*servers, servers[0])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        accepted = [r for r in results if r.status_code == 202]
        assert len(accepted) == 1, [(r.status_code, r.text) for r in results]  # one wins the offset
        for r in results:
            assert r.status_code in (202, 416), r.text
        offset += len(chunk)
        stored += chunk
        assert accepted[0].headers["Range"] == f"0-{offset - 1}"
    r = httpx.put(url(servers[1].url, location), params={"digest": sha256(stored)})
    assert r.status_code == 201, r.text
    assert_blob(servers[0].url, name, sha256(stored), stored)


def test_sigkilled_holder_does_not_wedge_the_session(
        make_registry_server: Callable[..., RegistryServer], storage_config: dict[str, Any],
        storage: Storage) -> None:
    """The server streaming a chunk dies (SIGKILL): the session's lock goes with it (at once on
    disk, after ``lockttl`` on S3) and the upload continues on the other server."""
    extra = lock_ttl_extra(storage_config, "2s")
    victim, survivor = make_registry_server(extra), make_registry_server(extra)
    name = "crash/app"
    location, upload_id = new_session(victim.url, name)
    held = Held("PATCH", url(victim.url, location), b"x" * 1000, b"never sent")
    wait_for(lambda: storage.exists(Storage.lock(name, upload_id)))  # the holder is in
    assert_refused(httpx.get(url(survivor.url, location)))  # busy while its holder lives
    assert victim.pid is not None
    os.killpg(victim.pid, signal.SIGKILL)
    victim.process.wait(10)  # type: ignore[union-attr]
    held.abandon()
    statuses: list[int] = []

    def usable() -> bool:
        r = httpx.get(url(survivor.url, location))
        statuses.append(r.status_code)
        return r.status_code == 204

    assert wait_for(usable, 60), statuses
    assert set(statuses) <= {204, 416}
    r = httpx.patch(url(survivor.url, location), content=b"fresh" * 100)
    assert r.status_code == 202, r.text


def test_commits_of_one_digest_racing_on_two_servers(servers: tuple[RegistryServer, RegistryServer],
                                                     storage: Storage) -> None:
    """Several finishes of the same digest at once (the final move racing another commit): every
    one succeeds and the stored blob is right, in every repository."""
    data = payload(MiB + 99, seed=14)
    digest = sha256(data)
    results: list[int] = []

    def push_to(base: str, name: str) -> None:
        r = httpx.post(f"{base}/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data,
                       timeout=60)
        results.append(r.status_code)

    threads = [threading.Thread(target=push_to, args=(s.url, f"same/r{i}"))
               for i, s in enumerate(servers * 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [201] * len(threads)
    assert storage.read(Storage.blob(digest)) == data
    for i in range(len(threads)):
        assert_blob(servers[i % 2].url, f"same/r{i}", digest, data)


# -- blobs already stored, and blobs found corrupt -------------------------------------------------


def test_poisoned_first_copy_is_repaired_by_an_honest_upload(registry_server: RegistryServer,
                                                             storage: Storage) -> None:
    """Bytes that do not hash to their name sit in ``blobs/`` (written before this fix, or by a
    failing disk): an honest upload of the digest replaces them instead of linking them."""
    honest = payload(300_000, seed=5)
    digest = sha256(honest)
    for poison in (b"P" * len(honest), b"short"):  # same size, then another size
        storage.write(Storage.blob(digest), poison)
        r = httpx.post(f"{registry_server.url}/v2/victim/img/blobs/uploads/", params={"digest": digest},
                       content=honest)
        assert r.status_code == 201, r.text
        assert storage.read(Storage.blob(digest)) == honest
        assert_blob(registry_server.url, "victim/img", digest, honest)


def test_reupload_never_replaces_a_valid_blob(registry_server: RegistryServer, storage: Storage) -> None:
    data = payload(50_000, seed=6)
    digest = sha256(data)
    base = registry_server.url
    push(base, "one", data)
    if storage.root is not None:
        before = os.stat(storage.root / Storage.blob(digest)).st_ino
    else:
        key = storage.prefix + Storage.blob(digest)
        before = storage.s3.head_object(Bucket=storage.bucket, Key=key)["ETag"]
    push(base, "two", data)
    if storage.root is not None:
        assert os.stat(storage.root / Storage.blob(digest)).st_ino == before
    else:
        assert storage.s3.head_object(Bucket=storage.bucket, Key=key)["ETag"] == before
    assert_blob(base, "two", digest, data)


def test_corrupt_blob_is_never_served_as_valid(registry_server: RegistryServer, storage: Storage) -> None:
    """A full GET of a blob whose bytes no longer hash to its name is cut off before its last
    byte (never a complete, valid-looking answer); the blob is then reported missing, and an
    honest upload puts it back."""
    base = registry_server.url
    data = payload(3 * MiB + 7, seed=7)
    digest = sha256(data)
    push(base, "c/app", data)
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0xFF
    storage.write(Storage.blob(digest), bytes(damaged))
    with pytest.raises(httpx.HTTPError):
        r = httpx.get(f"{base}/v2/c/app/blobs/{digest}", timeout=60)
        assert sha256(r.content) == digest, "a corrupt blob was served whole"
    assert wait_for(lambda: httpx.head(f"{base}/v2/c/app/blobs/{digest}").status_code == 404)
    push(base, "c/app", data)
    assert_blob(base, "c/app", digest, data)


def test_truncated_blob_is_never_served_as_valid(registry_server: RegistryServer, storage: Storage) -> None:
    base = registry_server.url
    data = payload(2 * MiB, seed=8)
    digest = sha256(data)
    push(base, "t/app", data)
    assert httpx.head(f"{base}/v2/t/app/blobs/{digest}").status_code == 200  # size cached by the server
    storage.write(Storage.blob(digest), data[:MiB])
    r = None
    with pytest.raises(httpx.HTTPError):
        r = httpx.get(f"{base}/v2/t/app/blobs/{digest}", timeout=60)
        r.raise_for_status()
    assert r is None or sha256(r.content) != digest


# -- trusting verified blobs (registry/layout.py: VerifiedBlobs) -------------------------------------


def verifications(base: str) -> dict[str, float]:
    """pyreg_blob_verifications_total by ``how``, from the server's /metrics."""
    found: dict[str, float] = {}
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("pyreg_blob_verifications_total{"):
            how = line.split('how="', 1)[1].split('"', 1)[0]
            found[how] = float(line.rsplit(" ", 1)[1])
    return found


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)
            if after.get(k, 0) != before.get(k, 0)}


def until_trusted(base: str, name: str, digest: str, data: bytes) -> None:
    """GET the blob until a GET is served as trusted: the first one hashes it, and on a
    filesystem a blob changed (published) a few ms ago has no version token yet."""
    for _ in range(200):
        before = verifications(base)
        assert_blob(base, name, digest, data)
        if delta(before, verifications(base)).get("trusted_get"):
            return
        time.sleep(0.02)
    raise AssertionError("the blob was never served as trusted")


def test_a_verified_blob_is_served_and_kept_without_rehashing(registry_server: RegistryServer,
                                                                storage: Storage) -> None:
    """Once a whole GET (or the publish) verified a blob, GETs stream it unhashed and a re-upload
    of its digest keeps it without reading it back, while its stored version is unchanged."""
    base = registry_server.url
    data = payload(3 * MiB + 5, seed=21)
    digest = sha256(data)
    push(base, "trust/one", data)
    until_trusted(base, "trust/one", digest, data)
    before = verifications(base)
    assert_blob(base, "trust/one", digest, data)
    assert delta(before, verifications(base)) == {"trusted_get": 1}
    before = verifications(base)
    push(base, "trust/two", data)  # the digest is stored: the upload is verified, the blob kept
    assert delta(before, verifications(base)) == {"trusted_check": 1}
    assert_blob(base, "trust/two", digest, data)


@pytest.mark.parametrize("how", ["rewrite", "in_place_mtime_restored"])
def test_a_trusted_blob_changed_in_place_is_caught(registry_server: RegistryServer, storage: Storage,
                                                   how: str) -> None:
    """A blob served unhashed before, then changed under the same name and size (on disk also
    in place, same inode, its mtime set back): its next GET hashes it, is cut short, and the
    blob is quarantined."""
    if how == "in_place_mtime_restored" and storage.root is None:
        pytest.skip("an S3 object cannot be changed in place")
    base = registry_server.url
    data = payload(2 * MiB + 9, seed=22)
    digest = sha256(data)
    push(base, "trust/changed", data)
    until_trusted(base, "trust/changed", digest, data)
    damaged = bytearray(data)
    damaged[MiB + 3] ^= 0x01
    if how == "rewrite":
        storage.write(Storage.blob(digest), bytes(damaged))
    else:
        assert storage.root is not None
        local = storage.root / Storage.blob(digest)
        st = os.stat(local)
        with open(local, "r+b") as f:
            f.seek(MiB + 3)
            f.write(bytes([damaged[MiB + 3]]))
        os.utime(local, ns=(st.st_atime_ns, st.st_mtime_ns))
        after = os.stat(local)
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    if storage.root is not None:  # past the window where a just-changed file has no token at all:
        time.sleep(4 * RACY_NS / 1e9)  # the token itself (its ctime) must tell the change
    before = verifications(base)
    with pytest.raises(httpx.HTTPError):
        r = httpx.get(f"{base}/v2/trust/changed/blobs/{digest}", timeout=60)
        assert sha256(r.content) == digest, "a changed blob was served whole"
    assert "trusted_get" not in delta(before, verifications(base))
    assert wait_for(lambda: httpx.head(f"{base}/v2/trust/changed/blobs/{digest}").status_code == 404)
    push(base, "trust/changed", data)
    assert_blob(base, "trust/changed", digest, data)


@pytest.mark.filesystem_only
def test_a_trusted_blob_changed_while_sent_by_the_kernel_is_cut_short(registry_server: RegistryServer,
                                                                       storage: Storage) -> None:
    """A trusted blob goes out with sendfile, unhashed (registry/zerocopy.py); the client reads
    the first piece, then the file is changed in place: the rest sent is the new bytes, so the
    version is checked again before the last MiB and the answer never completes."""
    base = registry_server.url
    data = payload(24 * MiB, seed=23)  # more than the loopback socket buffers hold
    digest = sha256(data)
    push(base, "trust/sent", data)
    until_trusted(base, "trust/sent", digest, data)
    assert storage.root is not None
    local = storage.root / Storage.blob(digest)
    got = bytearray()
    with pytest.raises(httpx.HTTPError), httpx.stream("GET", f"{base}/v2/trust/sent/blobs/{digest}",
                                                      timeout=60) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            if not got:
                with open(local, "r+b") as f:
                    f.seek(len(data) - 4 * MiB)
                    f.write(b"X" * 100)
            got += chunk
    assert len(got) < len(data)
    assert wait_for(lambda: httpx.head(f"{base}/v2/trust/sent/blobs/{digest}").status_code == 404)


@pytest.mark.filesystem_only
def test_a_client_leaving_a_sendfile_download_is_no_error(registry_server: RegistryServer,
                                                          storage: Storage) -> None:
    """A client that drops a trusted download the kernel is sending ends it quietly: no
    traceback in the log, the blob stays trusted and whole, the worker keeps serving."""
    base = registry_server.url
    data = payload(24 * MiB, seed=24)
    digest = sha256(data)
    push(base, "trust/left", data)
    until_trusted(base, "trust/left", digest, data)
    for _ in range(3):
        with httpx.stream("GET", f"{base}/v2/trust/left/blobs/{digest}", timeout=60) as r:
            assert r.status_code == 200
            next(r.iter_raw())
    before = verifications(base)
    assert_blob(base, "trust/left", digest, data)
    assert delta(before, verifications(base)) == {"trusted_get": 1}
    assert "Traceback" not in registry_server.log()


# -- racing deletes -----------------------------------------------------------------------------


@pytest.mark.filesystem_only
def test_filesystem_delete_races_another_delete(tmp_path: Path) -> None:
    """Processes deleting one tree at once (gc and a DELETE request): each returns, none raises
    anything but "not found"."""
    root = tmp_path / "root"
    rounds, width = 30, 60
    for i in range(rounds):
        for j in range(width):
            leaf = root / "tree" / str(i) / f"d{j}" / "sub"
            leaf.mkdir(parents=True)
            (leaf / "link").write_bytes(b"sha256:" + b"0" * 64)
    runner = (
        "import asyncio, sys\n"
        "from pyreg.storage.filesystem import FilesystemDriver\n"
        "from pyreg.storage.errors import PathNotFoundError\n"
        "d = FilesystemDriver(sys.argv[1])\n"
        "async def main():\n"
        "    for i in range(int(sys.argv[2])):\n"
        "        try:\n"
        "            await d.delete('/tree/%d' % i)\n"
        "        except PathNotFoundError:\n"
        "            pass\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", runner, str(root), str(rounds)], env=env,
                              stderr=subprocess.PIPE) for _ in range(3)]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert not any((root / "tree" / str(i)).exists() for i in range(rounds))


@pytest.mark.filesystem_only
def test_gc_and_deletes_race_on_the_same_manifests(
        make_registry_server: Callable[..., RegistryServer]) -> None:
    """`pyreg gc --delete-untagged` while DELETE requests (three at once per manifest, on two
    workers) remove the same manifests and tags: gc exits 0 and no answer is a 500."""
    server = make_registry_server(workers=2)
    assert server.data_dir is not None
    base = server.url
    name, count = "gcrace/app", 12
    layer = payload(3000, seed=9)
    assert httpx.post(f"{base}/v2/{name}/blobs/uploads/", params={"digest": sha256(layer)},
                      content=layer).status_code == 201
    digests = []
    for j in range(count):
        config = f'{{"j":{j}}}'.encode()
        assert httpx.post(f"{base}/v2/{name}/blobs/uploads/", params={"digest": sha256(config)},
                          content=config).status_code == 201
        m = image_manifest(config, [layer])
        for tag in (f"a{j}", f"b{j}", f"c{j}"):
            assert httpx.put(f"{base}/v2/{name}/manifests/{tag}", content=m,
                             headers={"Content-Type": OCI_MANIFEST}).status_code == 201
        digests.append(sha256(m))
    gc_result: list[subprocess.CompletedProcess[str]] = []
    statuses: list[tuple[str, int, str]] = []

    def gc() -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        gc_result.append(subprocess.run(
            [sys.executable, "-m", "pyreg", "gc", "--data-dir", str(server.data_dir),
             "--delete-untagged", "--grace", "0s", "--settle", "0s"],
            capture_output=True, text=True, env=env, timeout=300))

    def delete(path: str, barrier: threading.Barrier) -> None:
        barrier.wait(30)
        r = httpx.delete(f"{base}{path}", timeout=60)
        statuses.append((path, r.status_code, r.text))

    gc_thread = threading.Thread(target=gc)
    gc_thread.start()
    for j, d in enumerate(digests):
        paths = [f"/v2/{name}/manifests/{d}"] * 3 + [f"/v2/{name}/manifests/{t}{j}" for t in "abc"]
        barrier = threading.Barrier(len(paths))
        threads = [threading.Thread(target=delete, args=(p, barrier)) for p in paths]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    gc_thread.join(300)
    assert gc_result and gc_result[0].returncode == 0, gc_result[0].stderr[-3000:]
    assert not [s for s in statuses if s[1] >= 500], [s for s in statuses if s[1] >= 500]
    assert {s[1] for s in statuses} <= {202, 404}


@pytest.mark.filesystem_only
async def test_purge_removes_locks_their_dead_holders_left(tmp_path: Path) -> None:
    """A SIGKILLed holder's flock dies with it but its lock file stays: purge removes it, and
    leaves a lock that a live request holds."""
    from pyreg.registry.layout import Layout, upload_lock_path
    from pyreg.registry.uploads import Uploads
    from pyreg.storage.filesystem import FilesystemDriver

    driver = FilesystemDriver(tmp_path / "data")
    uploads = Uploads(Layout(driver))
    live_id = await uploads.start("p/app")
    root = tmp_path / "data"
    leftover = root / upload_lock_path("p/app", "dead-session").lstrip("/")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import asyncio, sys\n"
         "from pyreg.storage.filesystem import FilesystemDriver\n"
         "async def main():\n"
         "    lock = await FilesystemDriver(sys.argv[1]).try_lock(sys.argv[2])\n"
         "    print('held' if lock else 'busy', flush=True)\n"
         "    await asyncio.sleep(600)\n"
         "asyncio.run(main())\n", str(root), upload_lock_path("p/app", "dead-session")],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        assert await driver.try_lock(upload_lock_path("p/app", "dead-session")) is None
    finally:
        holder.kill()
        holder.wait(10)
    assert leftover.exists()
    live = await driver.try_lock(upload_lock_path("p/app", live_id))
    assert live is not None
    await uploads.purge(7 * 86400)
    assert not leftover.exists()
    assert (root / upload_lock_path("p/app", live_id).lstrip("/")).exists()  # still held
    await live.release()
