"""Every command in docs/*.md runs, so the operator documentation cannot rot.

Each page's fenced ```` ```sh ```` blocks are joined, in order, into one bash script run with
``set -euo pipefail`` in an empty directory, with ``pyreg`` on the PATH running this checkout and
HOME, the client store and credentials under that directory. The pages use 127.0.0.1:5000 …
127.0.0.1:5009 for their servers; the test gives each of those a free port. Background jobs a
page starts (``pyreg serve … &``) are stopped when its script ends. A page's S3 examples use
``http://127.0.0.1:9000`` and the bucket ``my-registry-bucket``: here a moto server's endpoint and
a fresh bucket on it. Blocks marked ```` ```console ```` or ```` ```text ```` are not run (what
needs systemd, Kubernetes or a real domain).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.registry import REPO_ROOT, free_port

DOCS = REPO_ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
PORT = re.compile(r"127\.0\.0\.1:(50[0-9][0-9])\b")
S3_ENDPOINT = "http://127.0.0.1:9000"
S3_BUCKET = "my-registry-bucket"
PRELUDE = """\
set -euo pipefail
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT
"""


def blocks(page: Path) -> list[str]:
    return SH_BLOCK.findall(page.read_text(encoding="utf-8"))


def script_for(page: Path, ports: dict[str, str], s3: tuple[str, str] | None) -> str:
    text = "\n".join(blocks(page))
    text = PORT.sub(lambda m: f"127.0.0.1:{ports.setdefault(m.group(1), str(free_port()))}", text)
    if s3 is not None:
        text = text.replace(S3_ENDPOINT, s3[0]).replace(S3_BUCKET, s3[1])
    return PRELUDE + text


def test_the_docs_have_pages_with_commands() -> None:
    names = {p.name for p in PAGES}
    assert {"quickstart.md", "auth.md", "tls.md", "operations.md", "storage.md", "migrating.md",
            "configuration.md"} <= names
    for page in PAGES:
        if page.name not in ("README.md", "configuration.md"):
            assert blocks(page), f"{page.name} has no ```sh block"


@pytest.mark.peers
@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
def test_documented_commands_run(page: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    s3 = None
    if S3_ENDPOINT in page.read_text(encoding="utf-8"):
        moto = request.getfixturevalue("moto_server")
        s3 = (moto.endpoint, moto.new_bucket())
    if "docker-registry serve" in page.read_text(encoding="utf-8") and not shutil.which("docker-registry"):
        pytest.skip("Distribution's docker-registry (Debian package) is not installed")
    work = tmp_path / "work"
    bin_dir = tmp_path / "bin"
    for d in (work, bin_dir, tmp_path / "home"):
        d.mkdir()
    shim = bin_dir / "pyreg"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m pyreg "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYREG_", "REGISTRY_", "DOCKER_", "AWS_"))}
    env.update(PATH=f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", HOME=str(tmp_path / "home"),
               PYTHONPATH=str(REPO_ROOT), PYREG_STORE=str(tmp_path / "store"),
               PYREG_NETWORK="none")  # a page's containers make no pyreg0 on the host
    script = tmp_path / f"{page.stem}.sh"
    script.write_text(script_for(page, {}, s3))
    result = subprocess.run(["bash", str(script)], cwd=work, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, (f"{page.name}: exit {result.returncode}\n--- stdout\n{result.stdout}\n"
                                    f"--- stderr\n{result.stderr[-6000:]}")


def schema_keys() -> set[str]:
    """Every key name of pyreg's schema (Distribution's not-implemented ones aside)."""
    import dataclasses
    import typing

    from pyreg.registry.config import Config
    from pyreg.registry.config_loader import _hints, _is_optional

    names: set[str] = set()

    def walk(cls: type) -> None:
        hints = _hints(cls)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            refused = f.name in ("inmemory", "azure", "gcs", "swift", "oss", "silly")
            if f.metadata.get("notimplemented") or f.metadata.get("internal") or refused:
                continue
            names.add(f.name)
            _, tp = _is_optional(hints[f.name])
            if typing.get_origin(tp) is list:
                tp = typing.get_args(tp)[0]
            if dataclasses.is_dataclass(tp) and isinstance(tp, type):
                walk(tp)

    walk(Config)
    return names


def test_deploy_config_shows_every_key() -> None:
    text = (REPO_ROOT / "deploy/config.yml").read_text(encoding="utf-8")
    missing = sorted(k for k in schema_keys() if not re.search(rf"[\s{{,]{k}:", text))
    assert not missing, f"deploy/config.yml does not show: {missing}"
