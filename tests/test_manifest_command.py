"""``pyreg manifest``: make an index from local and registry images, push it, and let skopeo and
podman read what was pushed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.client import ClientEnv
from tests.fixtures.peers import Podman, Skopeo, tagged
from tests.images import TestImage, TestIndex

pytestmark = pytest.mark.peers

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_create_add_annotate_push(pyreg_factory: Any, client_env: ClientEnv, skopeo: Skopeo,
                                  podman: Podman, five_layer_image: TestImage, index_image: TestIndex,
                                  tmp_path: Path) -> None:
    host = pyreg_factory().host
    skopeo.copy(index_image.oci_ref, tagged(host, "src/multi", "1"), "--all")
    # a local member (loaded from an archive) and a registry index (--all: both its platforms)
    archive = tmp_path / "five.tar"
    client_env.run("copy", five_layer_image.oci_ref, f"oci-archive:{archive}:{host}/src/five:1")
    client_env.run("load", "-i", str(archive))
    name = f"{host}/app/list:1"
    client_env.run("manifest", "create", name, f"{host}/src/five:1")
    client_env.run("manifest", "add", "--all", name, f"docker://{host}/src/multi:1")
    client_env.run("manifest", "annotate", name, five_layer_image.manifest_digest, "--variant", "v9",
                   "--annotation", "org.example.role=five")
    local = json.loads(client_env.run("manifest", "inspect", name).stdout)
    assert local["mediaType"] == OCI_INDEX
    members = {m["digest"]: m for m in local["manifests"]}
    expected = {five_layer_image.manifest_digest, *(c.manifest_digest for c in index_image.children)}
    assert set(members) == expected
    five = members[five_layer_image.manifest_digest]
    assert five["platform"] == {"architecture": five_layer_image.config_json["architecture"], "os": "linux",
                                "variant": "v9"}
    assert five["annotations"] == {"org.example.role": "five"}
    for child in index_image.children:  # platforms from each member's config
        assert members[child.manifest_digest]["platform"]["architecture"] == child.config_json["architecture"]

    pushed = json.loads(client_env.run("manifest", "push", name, "--json").stdout)
    # the registry members' blobs are mounted from the repository they were fetched from
    fetched = {d for c in index_image.children for d in c.blob_digests}
    assert {b["status"] for b in pushed["blobs"] if b["digest"] in fetched} == {"mounted"}
    raw = skopeo.inspect_raw(tagged(host, "app/list", "1"))
    assert sha(raw) == pushed["digest"]
    assert json.loads(raw) == local
    # --all (the default): every member and its blobs are in the target repository
    for digest in expected:
        assert skopeo.inspect_raw(f"docker://{host}/app/list@{digest}")
    skopeo.copy(tagged(host, "app/list", "1"), f"oci:{tmp_path / 'all'}:x", "--all")
    # podman reads the pushed index (its registries.conf marks our plain-HTTP registry insecure)
    with open(podman.registries_conf, "a") as conf:
        conf.write(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n')
    seen = json.loads(podman.run("manifest", "inspect", f"{host}/app/list:1").stdout)
    assert {m["digest"] for m in seen["manifests"]} == expected
    # --all=false: the index alone (its members are already there)
    again = json.loads(client_env.run("manifest", "push", "--all=false", name, f"{host}/app/list:2",
                                      "--json").stdout)
    assert again["digest"] == pushed["digest"] and again["blobs"] == []


def test_docker_members_make_a_docker_list(pyreg_factory: Any, client_env: ClientEnv, skopeo: Skopeo,
                                           five_layer_image: TestImage, tmp_path: Path) -> None:
    host = pyreg_factory().host
    archive = tmp_path / "docker.tar"
    skopeo.copy(five_layer_image.oci_ref, f"docker-archive:{archive}:{host}/d/five:1")
    # docker-archive: read through manifest.json only, so the local image is a Docker manifest
    as_docker = tmp_path / "as-docker.tar"
    client_env.run("copy", f"docker-archive:{archive}", f"oci-archive:{as_docker}:{host}/d/five:1")
    client_env.run("load", "-i", str(as_docker))
    name = f"{host}/d/list:1"
    client_env.run("manifest", "create", name, f"{host}/d/five:1")
    local = json.loads(client_env.run("manifest", "inspect", name).stdout)
    assert local["mediaType"] == DOCKER_LIST
    client_env.run("manifest", "push", name)
    assert json.loads(skopeo.inspect_raw(tagged(host, "d/list", "1")))["mediaType"] == DOCKER_LIST


def test_mistakes_are_one_line(client_env: ClientEnv, five_layer_image: TestImage, tmp_path: Path) -> None:
    archive = tmp_path / "five.tar"
    client_env.run("copy", five_layer_image.oci_ref, f"oci-archive:{archive}:example.com/five:1")
    client_env.run("load", "-i", str(archive))
    client_env.run("manifest", "create", "example.com/list:1", "example.com/five:1")
    digest = five_layer_image.manifest_digest
    for args, needle in [
        (["manifest", "create", "example.com/list:1"], "--amend"),
        (["manifest", "add", "example.com/nolist:1", "example.com/five:1"], "no such manifest list"),
        (["manifest", "add", "example.com/five:1", "example.com/five:1"], "not a manifest list"),
        (["manifest", "annotate", "example.com/list:1", "sha256:" + "0" * 64, "--os", "x"], "not a member"),
        (["manifest", "annotate", "example.com/list:1", digest, "--annotation", "x"], "KEY=VALUE"),
        (["manifest", "rm", "example.com/five:1"], "not a manifest list"),
    ]:
        proc = client_env.run(*args, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and needle in lines[0], (args, proc.stderr)
    assert client_env.run("manifest", "rm", "example.com/list:1").stdout.strip() == \
        "Untagged: example.com/list:1"
    # the member stays
    assert "example.com/five" in client_env.run("images").stdout
