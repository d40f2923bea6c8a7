"""``Transfer-Encoding: chunked`` upload bodies decoded by a thread (registry/chunkedbody.py, taken
by registry/http_protocol.py's ``pyreg.directbody``), as docker and containerd push a layer: the
decoder on a real socket pair, then a real ``pyreg serve`` over real sockets and curl."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import ClientDisconnect

from tests.fixtures.registry import RegistryServer
from tests.test_direct_body import Reader, blob_file, connect, head, start_upload, wait_for

MiB = 1 << 20


@pytest.fixture
def storage_config(tmp_path: Path) -> dict[str, Any]:
    """The direct path is the filesystem driver's: filesystem only."""
    return {"filesystem": {"rootdirectory": str(tmp_path / "registry-data")}}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chunked(pieces: list[bytes], ext: str = "", trailers: bytes = b"") -> bytes:
    out = [f"{len(p):x}{ext}\r\n".encode() + p + b"\r\n" for p in pieces]
    return b"".join(out) + b"0" + ext.encode() + b"\r\n" + trailers + b"\r\n"


# -- the decoder on a socket pair --------------------------------------------------------------

def decode(raw: bytes, split: int, buffer: int = 1 << 16) -> tuple[bytes, bytes, Any]:
    """``raw`` as a ChunkedSocketBody sees it: ``raw[:split]`` came with the head, the rest from
    the socket; returns the decoded body, what followed it (read by the body or still in the
    socket) and the error (or None)."""
    from pyreg.registry.chunkedbody import ChunkedSocketBody

    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        def send() -> None:
            theirs.sendall(raw[split:])
            theirs.shutdown(socket.SHUT_WR)
        writer = threading.Thread(target=send)
        writer.start()
        body = ChunkedSocketBody(os.dup(ours.fileno()), raw[:split], threading.Event(), 10.0, lambda b: None)
        out = bytearray()
        buf = bytearray(buffer)
        error = None
        try:
            while n := body.readinto(memoryview(buf)):
                out += buf[:n]
        except ClientDisconnect as e:
            error = e
        writer.join()
        body.close_fd()
        after = body.leftover
        if error is None:
            ours.setblocking(True)
            while more := ours.recv(65536):
                after += more
        return bytes(out), after, error
    finally:
        ours.close()
        theirs.close()


def test_decoder_every_split_point_extensions_trailers_and_leftover() -> None:
    pieces = [b"a", os.urandom(300), b"", b"xyz"][:4]
    pieces = [p for p in pieces if p]  # an empty chunk would be the last one
    raw = chunked(pieces, ext=';name="v;1"; x', trailers=b"X-Digest: abc\r\nTrailer2:\r\n")
    nxt = b"GET /v2/ HTTP/1.1\r\nHost: r\r\n\r\n"
    for split in range(len(raw) + len(nxt) + 1):
        for buffer in (1, 7, 1 << 16):
            data, leftover, error = decode(raw + nxt, split, buffer)
            assert error is None and data == b"".join(pieces), (split, buffer)
            assert leftover == nxt, (split, buffer)


def test_decoder_many_tiny_chunks() -> None:
    body = os.urandom(5000)
    raw = chunked([body[i:i + 1] for i in range(len(body))])
    data, leftover, error = decode(raw, 100)
    assert error is None and data == body and leftover == b""


@pytest.mark.parametrize("bad", [
    b"zz\r\n",  # not hex
    b"0x10\r\n",  # int(..., 16) would take it
    b"1_0\r\n",
    b" 10\r\n",
    b"10\n",  # bare LF
    b"1" * 17 + b"\r\n",  # more than 16 hex digits
    b"10;" + b"e" * 5000 + b"\r\n",  # a size line past the limit
    b"10;\x01\r\n",  # a control character in an extension
], ids=["zz", "0x", "underscore", "space", "bare-lf", "17-digits", "long-ext", "ctl-ext"])
def test_decoder_refuses_a_bad_size_line_after_keeping_whole_chunks(bad: bytes) -> None:
    good = os.urandom(1000)
    raw = f"{len(good):x}\r\n".encode() + good + b"\r\n" + bad + b"x" * 16 + b"\r\n0\r\n\r\n"
    data, _, error = decode(raw, 0)
    assert data == good
    assert error is not None and "malformed" in str(error)


def test_decoder_refuses_data_not_followed_by_crlf_and_bad_trailers() -> None:
    data, _, error = decode(b"3\r\nabcX\r\n0\r\n\r\n", 0)
    assert data == b"abc" and error is not None
    data, _, error = decode(b"3\r\nabc\r\n0\r\nno colon here\r\n\r\n", 0)
    assert data == b"abc" and error is not None
    data, _, error = decode(b"3\r\nabc\r\n0\r\n" + b"X-A: " + b"b" * 70000 + b"\r\n\r\n", 0)
    assert data == b"abc" and error is not None


def test_decoder_cut_short_keeps_what_arrived() -> None:
    data, _, error = decode(b"10\r\n0123456789", 0)
    assert data == b"0123456789" and error is not None and "malformed" not in str(error)


# -- a real server -----------------------------------------------------------------------------

def stored(server: RegistryServer, where: str) -> int | None:
    r = httpx.get(f"{server.url}{where}")
    return int(r.headers["range"].split("-")[1]) + 1 if r.status_code == 204 else None


def pumping(server: RegistryServer, client: socket.socket) -> bool:
    """The server reads ``client``'s connection through a duplicate of its descriptor: a thread
    receives the body (registry/directbody.py); the ASGI stream path never duplicates it."""
    port = client.getsockname()[1]
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01" and fields[9] != "0":
                    inode = fields[9]  # the server's end (ESTABLISHED) of the client's connection
    if inode is None:
        return False
    count = 0
    for fd in Path(f"/proc/{server.pid}/fd").iterdir():
        try:
            count += os.readlink(fd) == f"socket:[{inode}]"
        except OSError:
            continue
    return count >= 2


def read_all(s: socket.socket) -> bytes:
    s.settimeout(60)
    answer = b""
    while chunk := s.recv(65536):
        answer += chunk
    return answer


def test_chunked_patch_stored_then_put_and_a_pipelined_request(make_registry_server: Any) -> None:
    server = make_registry_server()
    data = os.urandom(9 * MiB + 77)
    pieces = [data[i:i + 32768] for i in range(0, len(data), 32768)]  # Go's io.Copy size, as docker
    where = start_upload(server, "chunked/pipe")
    with connect(server) as s:
        body = chunked(pieces, trailers=b"X-Checksum: none\r\n")
        s.sendall(head("PATCH", where, {"Transfer-Encoding": "chunked"}) + body[:3 * MiB])
        wait_for(lambda: pumping(server, s))
        # The body's last chunk and the next request leave together: the next is the parser's.
        s.sendall(body[3 * MiB:] + head("GET", "/v2/"))
        reader = Reader(s)
        status, headers, _ = reader.answer()
        assert status == 202 and headers["range"] == f"0-{len(data) - 1}", reader.buf[:300]
        assert reader.answer()[0] == 200
        # ... and the connection goes on: the PUT with an empty body finishes the upload.
        s.sendall(head("PUT", f"{headers['location']}?digest={digest_of(data)}", {"Content-Length": "0"}))
        status, headers, _ = reader.answer()
        assert status == 201 and headers["docker-content-digest"] == digest_of(data)
    assert httpx.get(f"{server.url}/v2/chunked/pipe/blobs/{digest_of(data)}").content == data
    # The body bytes count in the metrics as the stream path counts them: the data, not the framing.
    received = sum(sample.value for family in text_string_to_metric_families(
        httpx.get(f"{server.url}/metrics").text) for sample in family.samples
        if sample.name == "pyreg_http_received_bytes_total" and sample.labels.get("route") == "upload")
    assert received == len(data)


def test_chunk_framing_split_across_reads(make_registry_server: Any) -> None:
    server = make_registry_server()
    data = os.urandom(3 * MiB)
    pieces = [data[:1], data[1:70_000], data[70_000:]]
    raw = chunked(pieces, ext=";a=b", trailers=b"T: 1\r\n")
    where = start_upload(server, "chunked/split")
    with connect(server) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(head("PATCH", where, {"Transfer-Encoding": "chunked"}) + raw[:2])
        cuts = [2, 3, 5, 70_010, 70_013, 2 * MiB, len(raw) - 9, len(raw) - 3, len(raw)]
        for start, end in itertools.pairwise(cuts):
            threading.Event().wait(0.05)  # separate segments, so separate reads
            s.sendall(raw[start:end])
            if end == 2 * MiB:
                wait_for(lambda: pumping(server, s))
        status, headers, _ = Reader(s).answer()
        assert status == 202 and headers["range"] == f"0-{len(data) - 1}"
    assert httpx.put(f"{server.url}{where}?digest={digest_of(data)}").status_code == 201


def test_put_with_a_chunked_body_and_a_wrong_digest(make_registry_server: Any, tmp_path: Path) -> None:
    server = make_registry_server()
    data = os.urandom(3 * MiB)
    where = start_upload(server, "chunked/put")
    with connect(server) as s:
        s.sendall(head("PUT", f"{where}?digest={digest_of(b'other')}", {"Transfer-Encoding": "chunked"})
                  + chunked([data]))
        status, _, body = Reader(s).answer()
    assert status == 400 and b"DIGEST_INVALID" in body
    assert not blob_file(tmp_path / "registry-data", digest_of(data)).exists()
    where = start_upload(server, "chunked/put")
    with connect(server) as s:
        raw = chunked([data[:MiB], data[MiB:]])
        s.sendall(head("PUT", f"{where}?digest={digest_of(data)}", {"Transfer-Encoding": "chunked"})
                  + raw[:2 * MiB])
        wait_for(lambda: pumping(server, s))
        s.sendall(raw[2 * MiB:])
        status, _, _ = Reader(s).answer()
    assert status == 201
    assert httpx.get(f"{server.url}/v2/chunked/put/blobs/{digest_of(data)}").content == data


@pytest.mark.parametrize("bad", [b"nothex\r\n", b"1;" + b"e" * 5000 + b"\r\n", b"MISSING-CRLF"],
                         ids=["not-hex", "size-line-too-long", "data-without-crlf"])
def test_malformed_framing_closes_and_keeps_whole_chunks(make_registry_server: Any, tmp_path: Path,
                                                         bad: bytes) -> None:
    server = make_registry_server()
    good = os.urandom(2 * MiB)
    where = start_upload(server, "chunked/bad")
    with connect(server) as s:
        if bad == b"MISSING-CRLF":  # the data of a chunk runs on past its size
            raw = f"{len(good) + 1:x}\r\n".encode() + good + b"X" + b"YY" + b"1\r\nZ\r\n"
            kept = len(good) + 1
        else:
            raw = f"{len(good):x}\r\n".encode() + good + b"\r\n" + bad + b"rest\r\n"
            kept = len(good)
        s.sendall(head("PATCH", where, {"Transfer-Encoding": "chunked"}) + raw[:len(good) - 5])
        wait_for(lambda: pumping(server, s))
        s.sendall(raw[len(good) - 5:])
        assert b" 202 " not in read_all(s)  # closed without accepting the body
    wait_for(lambda: stored(server, where) is not None)
    assert stored(server, where) == kept
    assert not any((tmp_path / "registry-data" / "docker/registry/v2/blobs").rglob("data"))


def test_cut_short_mid_chunk_then_resumed(make_registry_server: Any) -> None:
    server = make_registry_server()
    data = os.urandom(8 * MiB)
    sent = 5 * MiB + 3
    where = start_upload(server, "chunked/cut")
    with connect(server) as s:
        s.sendall(head("PATCH", where, {"Transfer-Encoding": "chunked"})
                  + f"{len(data):x}\r\n".encode() + data[:sent])
        wait_for(lambda: pumping(server, s))
    wait_for(lambda: stored(server, where) == sent)
    r = httpx.patch(f"{server.url}{where}", content=data[sent:],
                    headers={"Content-Range": f"{sent}-{len(data) - 1}"})
    assert r.status_code == 202, r.text
    r = httpx.put(f"{server.url}{r.headers['location']}?digest={digest_of(data)}")
    assert r.status_code == 201, r.text
    assert httpx.get(f"{server.url}/v2/chunked/cut/blobs/{digest_of(data)}").content == data


def test_stalled_chunked_body_is_closed_and_a_racing_request_refused(make_registry_server: Any) -> None:
    # The stream path has no deadline inside a body: this one is the thread's (http.headertimeout).
    server = make_registry_server({"http": {"headertimeout": "3s"}})
    data = os.urandom(4 * MiB)
    sent = 2 * MiB + 9
    where = start_upload(server, "chunked/stall")
    with connect(server) as s:
        s.sendall(head("PATCH", where, {"Transfer-Encoding": "chunked"})
                  + f"{len(data):x}\r\n".encode() + data[:sent])
        wait_for(lambda: pumping(server, s))
        wait_for(lambda: httpx.get(f"{server.url}{where}").status_code == 416)  # held by the PATCH
        r = httpx.patch(f"{server.url}{where}", content=b"x", headers={"Content-Range": "0-0"})
        assert r.status_code == 416 and r.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
        assert b" 202 " not in read_all(s)
    wait_for(lambda: stored(server, where) == sent)


def test_expect_continue_and_curl(make_registry_server: Any, tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("needs curl")
    server = make_registry_server()
    data = os.urandom(6 * MiB + 5)
    path = tmp_path / "layer"
    path.write_bytes(data)
    where = start_upload(server, "chunked/curl")
    # curl -T with Transfer-Encoding: chunked sends Expect: 100-continue and its own framing.
    out = subprocess.run([curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PATCH",
                          "-T", str(path),
                          "-H", "Transfer-Encoding: chunked", "-H", "Content-Type: application/octet-stream",
                          f"{server.url}{where}"], capture_output=True, text=True, timeout=120)
    assert out.stdout == "202", out.stderr
    assert stored(server, where) == len(data)
    assert httpx.put(f"{server.url}{where}?digest={digest_of(data)}").status_code == 201
    assert httpx.get(f"{server.url}/v2/chunked/curl/blobs/{digest_of(data)}").content == data


def test_an_early_answer_leaves_the_held_body_to_the_parser(make_registry_server: Any) -> None:
    server = make_registry_server()
    body = chunked([b"abc"])
    with connect(server) as s:
        # An unknown upload answers 404 without reading the body; the connection still goes on.
        s.sendall(head("PATCH", "/v2/chunked/none/blobs/uploads/nosuch", {"Transfer-Encoding": "chunked"})
                  + body + head("GET", "/v2/"))
        reader = Reader(s)
        assert reader.answer()[0] == 404
        assert reader.answer()[0] == 200


# -- docker itself -----------------------------------------------------------------------------

def duplicated_sockets(pid: int) -> set[str]:
    """Socket inodes the process holds under more than one descriptor."""
    seen: set[str] = set()
    twice: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:"):
            (twice if link in seen else seen).add(link)
    return twice


@pytest.fixture
def dockerd(tmp_path: Path) -> Any:
    """A dockerd of the test's own (no bridge, no iptables), as tests/test_build_reference.py."""
    binary = shutil.which("dockerd")
    cli = shutil.which("docker")
    if not binary or not cli or os.geteuid() != 0:
        pytest.skip("needs root, dockerd and the docker CLI")
    base = tmp_path / "dk"
    base.mkdir()
    sock = base / "docker.sock"
    env = dict(os.environ, DOCKER_HOST=f"unix://{sock}", DOCKER_CONFIG=str(base / "cli"))
    with open(base / "dockerd.log", "wb") as log:
        proc = subprocess.Popen([binary, "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
                                 "--pidfile", str(base / "docker.pid"), "-H", f"unix://{sock}",
                                 "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: sock.exists() and subprocess.run([cli, "version"], env=env,
                                                          capture_output=True).returncode == 0, 120)
        yield cli, env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for mount in ("data", "exec"):
            subprocess.run(["umount", "-R", "-l", str(base / mount)], capture_output=True)


def test_docker_push_of_a_layer_is_received_by_the_thread(make_registry_server: Any, dockerd: Any,
                                                          tmp_path: Path) -> None:
    cli, env = dockerd
    server = make_registry_server()
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "big").write_bytes(os.urandom(24 * MiB))
    subprocess.run(["tar", "-C", str(layer), "-cf", str(tmp_path / "layer.tar"), "big"], check=True)
    ref = f"{server.host}/chunked/docker:1"
    subprocess.run([cli, "import", str(tmp_path / "layer.tar"), ref], env=env, check=True,
                   capture_output=True)
    pid = server.pid
    assert pid is not None
    before = duplicated_sockets(pid)
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:  # docker sends the layer as one chunked PATCH: a thread must be reading it
        while not done.is_set():
            seen.update(duplicated_sockets(pid) - before)
            done.wait(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        out = subprocess.run([cli, "push", ref], env=env, capture_output=True, text=True, timeout=600)
    finally:
        done.set()
        watcher.join()
    assert out.returncode == 0, out.stderr
    assert seen, "the layer's body was not received by a thread"
    # What docker pushed is what the registry serves: pull it back into a fresh name.
    subprocess.run([cli, "rmi", ref], env=env, check=True, capture_output=True)
    pulled = subprocess.run([cli, "pull", ref], env=env, capture_output=True, text=True, timeout=600)
    assert pulled.returncode == 0, pulled.stderr
    made = subprocess.run([cli, "create", ref, "x"], env=env, capture_output=True, text=True, check=True)
    cid = made.stdout.strip()
    copied = subprocess.run([cli, "cp", f"{cid}:/big", "-"], env=env, capture_output=True, check=True).stdout
    assert (layer / "big").read_bytes() in copied  # docker cp writes a tar of the file


def test_empty_lines_before_a_head_are_skipped_in_one_read(make_registry_server: Any) -> None:
    server = make_registry_server()
    data = os.urandom(2 * MiB)
    where = start_upload(server, "chunked/lines")
    with connect(server) as s:
        # 2,000 CRLF CRLF before the head: each is a place the head could have ended, in one read.
        s.sendall(b"\r\n\r\n" * 2000 + head("PATCH", where, {"Transfer-Encoding": "chunked"})
                  + chunked([data]))
        status, headers, _ = Reader(s).answer()
    assert status == 202 and headers["range"] == f"0-{len(data) - 1}"


def test_s3_reads_the_held_body_as_the_asgi_stream(make_registry_config: Any, s3_section: dict[str, Any],
                                                   tmp_path: Path) -> None:
    # The S3 driver takes no thread: the held bytes go back to the parser when it reads the stream.
    from tests.fixtures.registry import ServerPool

    config = make_registry_config()
    config["storage"] = {"s3": s3_section}
    pool = ServerPool()
    try:
        server = pool.start(RegistryServer(config, tmp_path / "s3"))
        data = os.urandom(7 * MiB + 1)
        where = start_upload(server, "chunked/s3")
        with connect(server) as s:
            pieces = [data[i:i + 65524] for i in range(0, len(data), 65524)]
            s.sendall(head("PATCH", where, {"Transfer-Encoding": "chunked"}) + chunked(pieces)
                      + head("GET", "/v2/"))
            reader = Reader(s)
            status, headers, _ = reader.answer()
            assert status == 202 and headers["range"] == f"0-{len(data) - 1}"
            assert reader.answer()[0] == 200
        assert httpx.put(f"{server.url}{where}?digest={digest_of(data)}").status_code == 201
        assert httpx.get(f"{server.url}/v2/chunked/s3/blobs/{digest_of(data)}").content == data
    finally:
        pool.stop_all()
