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
    """The present path reads a digest only from a whole ``200`` head with exactly one header."""
    from pyreg.client.present import _digest_header

    digest = "sha256:" + "a" * 64
    ok = f"HTTP/1.1 200 OK\r\nContent-Type: x\r\nDocker-Content-Digest: {digest}\r\n\r\n".encode()
    assert str(_digest_header(ok)) == digest
    assert _digest_header(ok.replace(b" 200 OK", b" 404 Not Found")) is None
    assert _digest_header(ok[:-2]) is None  # head not complete
    twice = ok.replace(b"\r\n\r\n", f"\r\nDocker-Content-Digest: {digest}\r\n\r\n".encode())
    assert _digest_header(twice) is None
    assert _digest_header(ok.replace(digest.encode(), b"sha256:zz")) is None
    assert _digest_header(b"HTTP/1.0 400 Bad Request\r\n\r\n") is None
    assert _digest_header(b"\x16\x03\x01garbage\r\n\r\n") is None


def test_index_tags_are_left_to_the_full_pull(tmp_path: Path) -> None:
    """A name that records an index (or nothing) has no present image: the full pull runs."""
    from pyreg.client.present import local_image
    from pyreg.storage.localstore import LocalStore
    from pyreg.storage.reference import parse

    store = LocalStore(tmp_path / "store")
    assert local_image(store, parse("127.0.0.1:1/x:1"), extract=True) is None
