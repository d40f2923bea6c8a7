"""Interop with CNCF Distribution 2.8 (Debian's docker-registry) as a peer.

The first tests check the test images and the peer helpers against the reference registry itself,
so a failure in the pyreg tests below points at pyreg, not at the images.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.peers import DistributionRegistry, Podman, Skopeo, tagged
from tests.images import TestImage, read_layout

pytestmark = pytest.mark.peers


def test_reference_registry_round_trip(distribution_registry: DistributionRegistry, skopeo: Skopeo,
                                       five_layer_image: TestImage, tmp_path: Path) -> None:
    ref = tagged(distribution_registry.host, "ref/five", "v1")
    skopeo.copy(five_layer_image.oci_ref, ref)
    assert skopeo.inspect_raw(ref) == five_layer_image.manifest
    assert skopeo.digest(ref) == five_layer_image.manifest_digest
    skopeo.copy(ref, f"oci:{tmp_path / 'out'}:v1")
    back = read_layout(tmp_path / "out", "v1")
    assert back.manifest_digest == five_layer_image.manifest_digest
    assert [back.blob(d) == five_layer_image.blob(d) for d in back.blob_digests] == [True] * 6


def test_reference_registry_podman(distribution_registry: DistributionRegistry, podman: Podman,
                                   busybox_image: TestImage) -> None:
    image_id = podman.pull(busybox_image.oci_ref)
    dest = f"{distribution_registry.host}/ref/busybox:1"
    podman.push(image_id, f"docker://{dest}")
    podman.rmi(image_id)
    assert podman.pull(f"docker://{dest}")
