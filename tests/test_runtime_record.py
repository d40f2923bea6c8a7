"""The typed container record (runtime/record.py) reads what earlier pyreg versions stored.

A container started before an upgrade must still be listed, inspected, stopped and removed: its
``state.json`` is the plain dict the first runtime wrote (no confinement keys, no ``tty``,
``init``, ``pids_default``). No root needed: nothing here starts a container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pyreg.runtime.record import Container, ContainerConfig
from tests.fixtures.runtime import REPO_ROOT

CID = "0123456789abcdef" * 4

# the shape runtime/commands/run.py wrote at its first version (7a936d2), once exited
OLD_RECORD = {
    "id": CID, "name": "old_one", "image": "busybox", "image_name": "docker.io/library/busybox:latest",
    "image_digest": "sha256:" + "ab" * 32,
    "config": {
        "entrypoint": [], "cmd": ["sleep", "1000"], "argv": ["sleep", "1000"], "env": ["PATH=/bin"],
        "workdir": "/", "user": "", "stop_signal": "SIGTERM", "hostname": CID[:12], "network": "none",
        "read_only": False, "volumes": [["/srv/data", "/data", True]], "memory": None, "cpus": None,
        "pids_limit": None, "rm": False, "layers": ["/nonexistent/layers/sha256/aa/diff"],
    },
    "created": "2026-11-28T10:00:00.000000000Z", "detached": True,
    "status": "running", "pid": 999_999_999, "pid_start": 1, "supervisor": 999_999_998,
    "supervisor_start": 1, "started_at": "2026-11-28T10:00:00.100000000Z",
}


def test_an_old_record_gets_the_defaults_the_old_code_read() -> None:
    rec = Container.from_json(json.loads(json.dumps(OLD_RECORD)))
    cfg = rec.config
    assert (rec.id, rec.name, rec.status, rec.exit_code) == (CID, "old_one", "running", None)
    # confine.prepare read cfg.get("no_new_privileges", True) and None capabilities as Docker's set
    assert cfg.no_new_privileges is True and cfg.capabilities is None and cfg.seccomp is None
    assert cfg.privileged is False and cfg.devices == [] and cfg.tty is False and cfg.init is False
    assert cfg.volumes == [("/srv/data", "/data", True)]
    again = rec.to_json()
    assert {k: v for k, v in again.items() if k != "config"} == {k: v for k, v in OLD_RECORD.items()
                                                              if k != "config"}
    assert again["config"].items() >= OLD_RECORD["config"].items()  # type: ignore[attr-defined]


def test_keys_of_another_version_are_kept() -> None:
    data = {**OLD_RECORD, "restart_policy": "always",
            "config": {**OLD_RECORD["config"], "ports": ["8080:80"]}}  # type: ignore[dict-item]
    rec = Container.from_json(data)
    assert rec.extra == {"restart_policy": "always"} and rec.config.extra == {"ports": ["8080:80"]}
    out = rec.to_json()
    assert out["restart_policy"] == "always" and out["config"]["ports"] == ["8080:80"]


def test_a_new_record_round_trips() -> None:
    cfg = ContainerConfig(argv=["true"], env=["A=1"], hostname="h", capabilities=["CAP_CHOWN"],
                          seccomp="unconfined", no_new_privileges=False,
                          devices=[{"path": "/dev/null", "rule": ["c", 1, 3, "rwm"]}],
                          volumes=[("/a", "/b", False)], memory=1 << 20, pids_default=2048, tty=True,
                          init=True)
    rec = Container(id=CID, name="n", config=cfg, created="t", status="exited", exit_code=0, oom_killed=False)
    text = json.dumps(rec.to_json())
    back = Container.from_json(json.loads(text))
    assert json.dumps(back.to_json()) == text
    assert back.config.volumes == [("/a", "/b", False)] and back.config.no_new_privileges is False


def _pyreg(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYREG_RUN_ROOT": str(tmp_path / "run"),
           "PYREG_STORE": str(tmp_path / "store"), "PYREG_CONFIG": str(tmp_path / "config.json"),
           "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "pyreg", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_containers_from_before_an_upgrade_are_listed_inspected_stopped_removed(tmp_path: Path) -> None:
    cdir = tmp_path / "run" / "containers" / CID
    cdir.mkdir(parents=True, mode=0o700)
    os.chmod(tmp_path / "run", 0o700)
    os.chmod(tmp_path / "run" / "containers", 0o700)
    (cdir / "upper").mkdir()
    (cdir / "state.json").write_text(json.dumps(OLD_RECORD))

    r = _pyreg(tmp_path, "ps", "-a")
    assert r.returncode == 0, r.stderr
    # its PID 1 and supervisor are long gone: shown as exited, 255, as before
    assert CID[:12] in r.stdout and "old_one" in r.stdout and "Exited (255)" in r.stdout
    r = _pyreg(tmp_path, "inspect", "old_one")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["Id"] == CID and doc["State"]["Status"] == "exited" and doc["State"]["ExitCode"] == 255
    assert doc["HostConfig"]["Binds"] == ["/srv/data:/data:ro"] and doc["Config"]["Cmd"] == ["sleep", "1000"]
    r = _pyreg(tmp_path, "stop", "old_one")
    assert r.returncode == 0 and r.stdout.strip() == "old_one", r.stderr
    r = _pyreg(tmp_path, "rm", CID[:12])
    assert r.returncode == 0, r.stderr
    assert not cdir.exists()
    assert _pyreg(tmp_path, "ps", "-aq").stdout == ""
