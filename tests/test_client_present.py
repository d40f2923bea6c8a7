"""``pyreg pull`` of an image the store already holds (client/present.py): one HEAD of the manifest,
no blob request, no httpx import — and the full pull whenever the tag moved or anything is missing.
Also ``pyreg --help``, which must import no registry client at all."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fixtures.client import REPO_ROOT, ClientEnv
from tests.fixtures.peers import Skopeo, tagged
from tests.images import TestImage


def _access(server: Any) -> list[dict[str, Any]]:
    """The access-log entries of ``pyreg serve`` (stopped here to flush its log)."""
    server.stop()
    out = []
    for line in server.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == "pyreg.access":
                out.append(entry)
    return out


def _imports(client_env: ClientEnv, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``pyreg ARGS`` with ``-X importtime``: the result and the modules it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "pyreg", *args],
                          env=client_env.env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    return proc, modules


def test_pull_of_a_present_image_is_one_head_and_no_httpx(pyreg_factory: Any, client_env: ClientEnv,
                                                          skopeo: Skopeo, busybox_image: TestImage) -> None:
    server = pyreg_factory({"log": {"format": "json", "accesslog": {"disabled": False}}})
    host = server.host
    skopeo.copy(busybox_image.oci_ref, tagged(host, "team/bb", "1"))
    first = json.loads(client_env.run("pull", "--json", f"{host}/team/bb:1").stdout)
    # the text output is the full pull's: each layer "already exists"
    text = client_env.run("pull", f"{host}/team/bb:1").stdout
    assert f"{busybox_image.layer_digests[0].split(':')[1][:12]}: already exists" in text
    before = len(_access(server))
    server.start()
    proc, modules = _imports(client_env, "pull", "--json", f"{host}/team/bb:1")
    again = json.loads(proc.stdout)
    assert again["digest"] == first["digest"] == busybox_image.manifest_digest
    assert [b["digest"] for b in again["blobs"]] == busybox_image.layer_digests
    assert {b["status"] for b in again["blobs"]} == {"exists"}
    assert not {m for m in modules if m.split(".")[0] in ("httpx", "httpcore", "ssl")}, modules
    # nor the store's model: the name, blobs and layers are looked up in the files themselves
    model = {"pyreg.storage.localstore", "pyreg.storage.manifest", "pyreg.storage.graph",
             "pyreg.storage.content", "pyreg.storage.imageindex"}
    assert not model & modules, model & modules
    assert "dataclasses" not in modules  # it imports inspect, ast, dis: ~10 ms (storage/frozen.py)
    # the fixture's own readiness probe (httpx's agent) is not ours
    requests = [e for e in _access(server)[before:] if e.get("user_agent", "").startswith("pyreg/")]
    assert [(e["method"], e["path"]) for e in requests] == [("HEAD", "/v2/team/bb/manifests/1")]


def test_moved_tag_and_missing_parts_take_the_full_pull(pyreg_factory: Any, client_env: ClientEnv,
                                                        skopeo: Skopeo, busybox_image: TestImage,
                                                        five_layer_image: TestImage) -> None:
    host = pyreg_factory().host
    ref = f"{host}/team/moving:1"
    skopeo.copy(busybox_image.oci_ref, tagged(host, "team/moving", "1"))
    client_env.run("pull", "-q", ref)
    # the tag moves: the pull fetches what it names now
    skopeo.copy(five_layer_image.oci_ref, tagged(host, "team/moving", "1"))
    moved = json.loads(client_env.run("pull", "--json", ref).stdout)
    assert moved["digest"] == five_layer_image.manifest_digest
    assert {b["status"] for b in moved["blobs"]} == {"exists", "pulled"}
    # a layer blob lost from the store: fetched (and verified) again, not reported present
    lost = five_layer_image.layer_digests[-1]
    (client_env.store / "blobs" / "sha256" / lost.split(":")[1]).unlink()
    again = json.loads(client_env.run("pull", "--json", ref).stdout)
    assert {b["digest"]: b["status"] for b in again["blobs"]}[lost] == "pulled"
    # an extracted layer removed: the pull extracts it again
    layers = client_env.store / "layers" / "sha256"
    for d in layers.iterdir():
        shutil.rmtree(d)
    client_env.run("pull", "-q", ref)
    assert any((d / "diff").is_dir() for d in layers.iterdir())
    # --no-extract needs no layers: the present path answers
    for d in layers.iterdir():
        shutil.rmtree(d)
    out = json.loads(client_env.run("pull", "--json", "--no-extract", ref).stdout)
    assert {b["status"] for b in out["blobs"]} == {"exists"}
    assert not list(layers.iterdir())


def test_help_imports_no_registry_client(client_env: ClientEnv) -> None:
    """``pyreg --help`` and a command's ``--help`` start without httpx, ssl or the stores (and the
    top-level help without argparse)."""
    for args in (("--help",), ("pull", "--help")):
        _, modules = _imports(client_env, *args)
        heavy = {m for m in modules if m.split(".")[0] in ("httpx", "httpcore", "ssl", "rich", "yaml")
                 or m.startswith(("pyreg.storage.localstore", "pyreg.storage.remote",
                                  "pyreg.storage.content"))}
        assert not heavy, (args, heavy)
    _, modules = _imports(client_env, "--help")
    assert "argparse" not in modules  # the top-level help is a print, not a parser


def test_head_answer_parsing() -> None:
    """The present path reads a digest only from a whole ``200`` head with exactly one header
    (storage/remote/plain.py, shared with the plain-HTTP pull)."""
    import pytest

    from pyreg.storage.remote.plain import Unsupported, parse_head

    digest = "sha256:" + "a" * 64
    ok = f"HTTP/1.1 200 OK\r\nContent-Type: x\r\nDocker-Content-Digest: {digest}\r\n\r\n".encode()
    assert parse_head(ok) == ("HTTP/1.1", 200, {"content-type": ["x"], "docker-content-digest": [digest]})
    assert parse_head(ok.replace(b" 200 OK", b" 404 Not Found"))[1] == 404
    twice = ok.replace(b"\r\n\r\n", f"\r\nDocker-Content-Digest: {digest}\r\n\r\n".encode())
    assert parse_head(twice)[2]["docker-content-digest"] == [digest, digest]  # header() refuses it
    assert parse_head(b"HTTP/1.0 400 Bad Request\r\n\r\n")[1] == 400
    for bad in (ok[:-2], b"\x16\x03\x01garbage\r\n\r\n", b"HTTP/1.1 2000 OK\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n"):
        with pytest.raises(Unsupported):
            parse_head(bad)


def test_index_tags_are_left_to_the_full_pull(tmp_path: Path) -> None:
    """A name that records an index (or nothing) has no present image: the full pull runs."""
    from pyreg.storage.localstore import LocalStore
    from pyreg.storage.storepeek import stored_image

    store = LocalStore(tmp_path / "store")
    assert stored_image(str(store.root), "127.0.0.1:1/x:1", extract=True) is None


def test_store_peek_answers_only_for_a_whole_image_in_a_store_it_would_open(tmp_path: Path) -> None:
    """storage/storepeek.py finds what the name records only when every blob (and, extracting,
    every layer) is there and the store is one LocalStore would open as it is: not too wide (the
    full path tightens it), not another user's (the full path refuses it)."""
    import os

    from pyreg.storage import mediatypes
    from pyreg.storage.digest import Digest
    from pyreg.storage.localstore import LocalStore
    from pyreg.storage.storepeek import stored_image

    store = LocalStore(tmp_path / "store")
    layer = b"layer bytes"
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [str(Digest.of(b"diff"))]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
                           "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": str(Digest.of(config)),
                                      "size": len(config)},
                           "layers": [{"mediaType": mediatypes.OCI_LAYER, "digest": str(Digest.of(layer)),
                                       "size": len(layer)}]}).encode()
    for blob in (layer, config, manifest):
        store.put_blob(blob)
    store.tag("127.0.0.1:1/x:1", Digest.of(manifest), mediatypes.OCI_MANIFEST, len(manifest))
    root = str(store.root)
    found = stored_image(root, "127.0.0.1:1/x:1", extract=False)
    assert found is not None and found.digest == Digest.of(manifest)
    assert found.layers == [(str(Digest.of(layer)), len(layer))]
    assert stored_image(root, "127.0.0.1:1/x:2", extract=False) is None
    assert stored_image(root, "127.0.0.1:1/x:1", extract=True) is None  # the layer is not extracted
    os.chmod(root, 0o755)
    assert stored_image(root, "127.0.0.1:1/x:1", extract=False) is None
    os.chmod(root, 0o700)
    if os.geteuid() == 0:
        os.chown(root, 65534, 65534)
        try:
            assert stored_image(root, "127.0.0.1:1/x:1", extract=False) is None
        finally:
            os.chown(root, 0, 0)
    store.blob_path(Digest.of(layer)).unlink()
    assert stored_image(root, "127.0.0.1:1/x:1", extract=False) is None
