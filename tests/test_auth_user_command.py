"""``pyreg user add/del/list`` as a real process, and the file it writes read back."""

from __future__ import annotations

import subprocess
import sys

from pyreg.registry.auth.htpasswd import Htpasswd


def pyreg(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyreg", *args], input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_user_add_list_del(tmp_path) -> None:
    path = tmp_path / "htpasswd"
    r = pyreg("user", "--file", str(path), "add", "alice", "--password-stdin", "--cost", "4",
              stdin="s3cret\n")
    assert r.returncode == 0, r.stderr
    assert "added alice" in r.stdout
    r = pyreg("user", "-f", str(path), "add", "bob", "--password-stdin", "--cost", "4", stdin="pw\n")
    assert r.returncode == 0, r.stderr
    assert Htpasswd(path).verify("alice", "s3cret")
    assert pyreg("user", "-f", str(path), "list").stdout.split() == ["alice", "bob"]
    r = pyreg("user", "-f", str(path), "add", "alice", "--password-stdin", "--cost", "4", stdin="new\n")
    assert "updated alice" in r.stdout
    db = Htpasswd(path)
    assert db.verify("alice", "new") and not db.verify("alice", "s3cret")
    assert pyreg("user", "-f", str(path), "del", "bob").returncode == 0
    r = pyreg("user", "-f", str(path), "del", "bob")
    assert r.returncode == 1 and "no user" in r.stderr
    assert pyreg("user", "-f", str(path), "list").stdout.split() == ["alice"]


def test_user_refusals(tmp_path) -> None:
    path = tmp_path / "htpasswd"
    r = pyreg("user", "-f", str(path), "add", "a:b", "--password-stdin", "--cost", "4", stdin="pw\n")
    assert r.returncode == 1 and "bad user name" in r.stderr
    r = pyreg("user", "-f", str(path), "add", "alice", "--password-stdin", stdin="\n")
    assert r.returncode == 1 and "empty password" in r.stderr
    r = pyreg("user", "-f", str(path), "add", "alice", stdin="")  # no terminal to ask on
    assert r.returncode == 1 and "--password-stdin" in r.stderr
    r = pyreg("user", "add", "alice")
    assert r.returncode == 2 and "--file" in r.stderr
    assert not path.exists()
