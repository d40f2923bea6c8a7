"""Issue 12's container commands at docker grade, on real containers (tests/fixtures/runtime.py)."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.runtime import RuntimeEnv

pytestmark = pytest.mark.root

LOOP = "while true; do sleep 0.05; done"


def _two(env: RuntimeEnv) -> tuple[str, str]:
    """One running container (label tier=web) and one exited (code 3)."""
    a = env.run("run", "-d", "--name", "alpha", "-l", "tier=web", "busybox", "sh", "-c", LOOP,
                check=True).stdout.strip()
    b = env.run("run", "-d", "--name", "beta", "busybox", "sh", "-c", "exit 3", check=True).stdout.strip()
    env.wait_running(a)
    env.wait_exited(b)
    return a, b


def test_ps_filter(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    a, b = _two(env)
    q = lambda *f: env.run("ps", "-q", *f, check=True).stdout.split()  # noqa: E731
    assert q() == [a[:12]]
    assert sorted(q("-a")) == sorted([a[:12], b[:12]])
    assert q("--filter", "status=exited") == [b[:12]]  # docker: a status filter needs no -a
    assert q("-f", "status=running") == [a[:12]]
    assert q("-a", "--filter", "name=bet") == [b[:12]]
    assert q("-a", "--filter", f"id={b[:6]}") == [b[:12]]
    assert sorted(q("-a", "--filter", "ancestor=busybox")) == sorted([a[:12], b[:12]])
    assert q("-a", "--filter", "ancestor=nosuch") == []
    assert q("-a", "--filter", "label=tier") == [a[:12]]
    assert q("-a", "--filter", "label=tier=web") == [a[:12]]
    assert q("-a", "--filter", "label=tier=db") == []
    # the same key twice: either; different keys: both
    assert sorted(q("-a", "-f", "name=alpha", "-f", "name=beta")) == sorted([a[:12], b[:12]])
    assert q("-a", "-f", "name=alpha", "-f", "status=exited") == []
    assert q("-a", "--no-trunc", "-f", "name=alpha") == [a]
    bad = env.run("ps", "--filter", "colour=red")
    assert bad.returncode == 1 and "invalid filter" in bad.stderr and "Traceback" not in bad.stderr


def test_ps_format(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    a, b = _two(env)
    out = env.run("ps", "-a", "--format", "{{.ID}} {{.Names}} {{.State}}", check=True).stdout
    assert sorted(out.splitlines()) == sorted([f"{a[:12]} alpha running", f"{b[:12]} beta exited"])
    labels = env.run("ps", "--format", "{{.Labels}}", check=True).stdout.strip().split(",")
    assert "tier=web" in labels  # with the image's own labels, as docker
    out = env.run("ps", "--format", "table {{.ID}}\\t{{.Names}}\\t{{.Status}}", check=True).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["CONTAINER", "ID", "NAMES", "STATUS"]
    assert lines[1].startswith(a[:12] + "   ") and "alpha" in lines[1] and "Up" in lines[1]
    doc = json.loads(env.run("ps", "--format", "{{json .}}", check=True).stdout)
    assert doc["Names"] == "alpha" and doc["Image"] == "busybox"
    bad = env.run("ps", "--format", "{{.Nope}}")
    assert bad.returncode == 1 and "Nope" in bad.stderr and "Traceback" not in bad.stderr


def test_inspect_and_images_format(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    a, _b = _two(env)
    out = env.run("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}} {{.Name}}", "beta",
                  check=True).stdout
    assert out == "exited 3 /beta\n"
    assert env.run("inspect", "-f", "{{.Id}}", "alpha", check=True).stdout.strip() == a
    assert json.loads(env.run("inspect", "-f", "{{json .State}}", "alpha", check=True).stdout)["Running"]
    out = env.run("images", "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout
    assert out.splitlines() == ["registry.invalid:5000/library/busybox:latest"]
    out = env.run("images", "--format", "table {{.Repository}}\\t{{.ID}}", check=True).stdout.splitlines()
    assert out[0].split() == ["REPOSITORY", "IMAGE", "ID"] and len(out) == 2
