"""Images by ID, as docker: ``run|inspect|rmi|tag|push|save <id>`` take the image ID (config
digest) whole or as a unique prefix, with or without ``sha256:``; an untagged ``pyreg build`` is
kept as ``<none>:<none>`` (an index.json entry with no ref.name) until ``pyreg prune``."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.runtime import RuntimeEnv
from tests.test_build_exec import build, context

BUSYBOX = "registry.invalid:5000/library/busybox:latest"


def _built_id(stderr: str) -> str:
    line = next(ln for ln in stderr.splitlines() if ln.startswith("writing image "))
    return line.split()[2]


def _index(env: RuntimeEnv) -> list[dict[str, Any]]:
    return list(json.loads((env.store / "index.json").read_text())["manifests"])


@pytest.mark.peers
def test_untagged_build_is_kept_and_used_by_id(busybox_store: RuntimeEnv, tmp_path: Path,
                                               skopeo: Any) -> None:
    bb = busybox_store
    ctx = context(tmp_path, 'FROM busybox\nRUN echo by-id > /msg\nCMD ["cat", "/msg"]\n')
    proc = build(bb, ctx)
    image_id = _built_id(proc.stderr)
    short = image_id.removeprefix("sha256:")[:12]
    assert f"pyreg run {short}" in proc.stderr

    # docker's <none>:<none>, listed as dangling; index.json has an entry with no ref.name
    table = bb.run("images", check=True).stdout.splitlines()
    assert any(line.split()[:3] == ["<none>", "<none>", short] for line in table), table
    assert bb.run("images", "-q", "--filter", "dangling=true", check=True).stdout.split() == [short]
    unnamed = [m for m in _index(bb) if "org.opencontainers.image.ref.name" not in m.get("annotations", {})]
    assert len(unnamed) == 1
    # another reader of the layout still finds the named image beside the unnamed entry
    inspected = json.loads(skopeo.run("inspect", f"oci:{bb.store}:{BUSYBOX}").stdout)
    assert inspected["Digest"].startswith("sha256:")

    for ref in (short, image_id, image_id.removeprefix("sha256:"), short[:6]):
        assert bb.run("run", "--rm", ref, check=True).stdout == "by-id\n"
    doc = json.loads(bb.run("inspect", short, check=True).stdout)
    assert doc["Id"] == image_id

    # save by ID: an archive with the image and no name (as docker save <id>)
    archive = tmp_path / "img.tar"
    bb.run("save", "-o", str(archive), short, check=True)
    with tarfile.open(archive) as tar:
        f = tar.extractfile("manifest.json")
        assert f is not None
        entries = json.loads(f.read())
    assert len(entries) == 1 and not entries[0].get("RepoTags")
    assert entries[0]["Config"].endswith(image_id.removeprefix("sha256:"))

    # push of an unnamed image needs a destination; said in one line
    push = bb.run("push", short)
    assert push.returncode == 1 and "has no name" in push.stderr and "Traceback" not in push.stderr

    # tag by ID names it: no longer dangling
    bb.run("tag", image_id, "named:1", check=True)
    assert bb.run("images", "-q", "--filter", "dangling=true", check=True).stdout.split() == []
    assert bb.run("run", "--rm", "named:1", check=True).stdout == "by-id\n"

    # rmi by ID of an image with two names: refused unless forced, then both go
    bb.run("tag", short, "named:2", check=True)
    refused = bb.run("rmi", short)
    assert refused.returncode == 1 and "must be forced" in refused.stderr
    bb.run("rmi", "-f", short, check=True)
    names = bb.run("images", "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout.split()
    assert not any(n.startswith(("named:", "registry.invalid:5000/library/named")) for n in names), names
    assert bb.run("run", "--rm", short).returncode == 125


def test_prune_removes_dangling_images(busybox_store: RuntimeEnv, tmp_path: Path) -> None:
    bb = busybox_store
    image_id = _built_id(build(bb, context(tmp_path, "FROM busybox\nRUN echo x > /x\n")).stderr)
    short = image_id.removeprefix("sha256:")[:12]
    bb.run("rmi", "busybox", check=True)  # the base's layers stay: the unnamed image uses them
    assert bb.run("run", "--rm", short, "cat", "/x", check=True).stdout == "x\n"
    out = bb.run("prune", check=True).stdout
    assert "removed 1 unnamed images" in out
    assert _index(bb) == []
    assert bb.run("images", "-q", check=True).stdout == ""
    assert bb.run("run", "--rm", short).returncode == 125


def test_ambiguous_id_prefix_is_refused(busybox_store: RuntimeEnv) -> None:
    """A second image whose config digest shares the first 4 hex digits with busybox's."""
    from pyreg.storage.localstore import LocalStore

    bb = busybox_store
    store = LocalStore(bb.store)
    base = store.images()[0]
    manifest = json.loads(store.read_blob(base.digest))
    config = json.loads(store.read_blob(manifest["config"]["digest"]))
    want = manifest["config"]["digest"].removeprefix("sha256:")[:4]
    for n in range(1_000_000):
        config.setdefault("config", {})["Labels"] = {"n": str(n)}
        raw = json.dumps(config).encode()
        hexd = hashlib.sha256(raw).hexdigest()
        if hexd.startswith(want):
            break
    store.put_blob(raw)
    manifest["config"] = {**manifest["config"], "digest": f"sha256:{hexd}", "size": len(raw)}
    mraw = json.dumps(manifest).encode()
    mdigest = store.put_blob(mraw)
    store.tag("registry.invalid:5000/library/twin:1", mdigest, manifest["mediaType"], len(mraw))

    for cmd in (("run", "--rm", want), ("inspect", want), ("rmi", want), ("tag", want, "x:1")):
        proc = bb.run(*cmd)
        assert proc.returncode == (125 if cmd[0] == "run" else 1), proc
        assert f"image ID prefix {want} is ambiguous: it matches 2 images" in proc.stderr, proc.stderr
        assert hexd[:12] in proc.stderr and "give more of the ID" in proc.stderr
        assert "Traceback" not in proc.stderr
    # a longer prefix picks one
    assert bb.run("run", "--rm", hexd[:12], "true").returncode == 0


@pytest.mark.peers
def test_push_by_id(busybox_store: RuntimeEnv, registry_server: Any, skopeo: Any, tmp_path: Path) -> None:
    """``pyreg push ID NAME`` sends the unnamed image a build made; skopeo reads it back."""
    bb = busybox_store
    image_id = _built_id(build(bb, context(tmp_path, 'FROM busybox\nRUN echo pushed > /p\n')).stderr)
    ref = f"{registry_server.host}/team/byid:1"
    bb.run("push", image_id.removeprefix("sha256:")[:12], ref, check=True)
    config = skopeo.inspect(f"docker://{ref}", "--config")
    assert config["rootfs"]["diff_ids"] and len(config["rootfs"]["diff_ids"]) == 2
    assert skopeo.inspect(f"docker://{ref}")["Digest"].startswith("sha256:")
    raw = skopeo.run("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout
    assert json.loads(raw)["config"]["digest"] == image_id


def _dangling(env: RuntimeEnv) -> set[str]:
    return set(env.run("images", "-q", "--filter", "dangling=true", check=True).stdout.split())


def test_moved_name_leaves_dangling_image(busybox_store: RuntimeEnv, registry_server: Any,
                                          tmp_path: Path) -> None:
    """When build -t, tag, load or pull moves a name, the image it named becomes <none>:<none>
    (if no other name is left on it), runnable by ID and kept for its containers until prune."""
    bb = busybox_store

    def built(word: str, *tags: str) -> str:
        ctx = context(tmp_path / word, f'FROM busybox\nRUN echo {word} > /v\nCMD ["cat", "/v"]\n')
        return _built_id(build(bb, ctx, *[a for t in tags for a in ("-t", t)]).stderr)[7:19]

    a = built("one", "app:1")
    bb.run("run", "--name", "keep-a", "app:1", check=True)  # an exited container of A
    bb.run("save", "-o", str(tmp_path / "a.tar"), "app:1", check=True)  # an archive naming app:1 -> A
    assert _dangling(bb) == set()

    b = built("two", "app:1")  # build -t over an existing name
    assert _dangling(bb) == {a}
    assert bb.run("run", "--rm", a, check=True).stdout == "one\n"
    assert bb.run("start", "-a", "keep-a", check=True).stdout == "one\n"

    bb.run("tag", "app:1", "app:2", check=True)
    bb.run("tag", "busybox", "app:1", check=True)  # B keeps app:2: not dangling
    assert _dangling(bb) == {a}
    bb.run("tag", "busybox", "app:2", check=True)  # B's last name moves
    assert _dangling(bb) == {a, b}

    bb.run("tag", b, "app:1", check=True)
    assert _dangling(bb) == {a}
    bb.run("load", "-i", str(tmp_path / "a.tar"), check=True)  # app:1 -> A again: B left unnamed
    assert _dangling(bb) == {b}

    remote = f"{registry_server.host}/team/app:1"
    bb.run("push", b, remote, check=True)
    bb.run("pull", remote, check=True)
    assert _dangling(bb) == set()
    bb.run("push", a, remote, check=True)  # the tag changes upstream
    bb.run("pull", remote, check=True)
    assert _dangling(bb) == {b}
    assert bb.run("run", "--rm", b, check=True).stdout == "two\n"

    for name in ("app:1", remote):
        bb.run("tag", "busybox", name, check=True)
    assert _dangling(bb) == {a, b}
    bb.run("prune", check=True)  # A is kept: keep-a uses it
    assert _dangling(bb) == {a}
    assert bb.run("start", "-a", "keep-a", check=True).stdout == "one\n"
    assert bb.run("run", "--rm", b).returncode == 125
    bb.run("rm", "keep-a", check=True)
    bb.run("prune", check=True)
    assert _dangling(bb) == set()
    assert bb.run("run", "--rm", a).returncode == 125
