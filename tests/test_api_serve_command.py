"""``pyreg serve`` as a user starts it: defaults with no config, env overrides, flags, config errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.fixtures.registry import REPO_ROOT, free_port, sha256


def serve(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PYREG_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.Popen([sys.executable, "-m", "pyreg", "serve", *args], cwd=cwd, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            if httpx.get(f"{url}/v2/", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_no_config_stores_under_local_data_dir(tmp_path: Path) -> None:
    port = free_port()
    proc = serve(["--addr", f"127.0.0.1:{port}"], tmp_path)
    try:
        wait_up(f"http://127.0.0.1:{port}", proc)
        r = httpx.post(f"http://127.0.0.1:{port}/v2/x/blobs/uploads/", params={"digest": sha256(b"d")},
                       content=b"d")
        assert r.status_code == 201
    finally:
        stop(proc)
    assert (tmp_path / "data/docker/registry/v2/blobs/sha256").is_dir()


def test_env_overrides_file_and_flags_beat_env(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(f"addr: 127.0.0.1:{free_port()}\n"
                      f"storage: {{filesystem: {{rootdirectory: {tmp_path}/file}}}}\n")
    env = {"PYREG_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "env"),
           "PYREG_ADDR": "127.0.0.1:1"}  # the flag below wins over this
    proc = serve(["--config", str(config), "--addr", f"127.0.0.1:{port}"], tmp_path, env)
    try:
        wait_up(f"http://127.0.0.1:{port}", proc)
        r = httpx.post(f"http://127.0.0.1:{port}/v2/x/blobs/uploads/", params={"digest": sha256(b"e")},
                       content=b"e")
        assert r.status_code == 201
    finally:
        stop(proc)
    assert (tmp_path / "env/docker/registry/v2").is_dir()
    assert not (tmp_path / "file").exists()
    # --data-dir beats the environment
    port = free_port()
    proc = serve(["--config", str(config), "--addr", f"127.0.0.1:{port}",
                  "--data-dir", str(tmp_path / "flag")], tmp_path, env)
    try:
        wait_up(f"http://127.0.0.1:{port}", proc)
    finally:
        stop(proc)
    assert (tmp_path / "flag").is_dir()


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("storage:\n  delete: {enabeld: true}\n")
    proc = serve(["--config", str(config)], tmp_path)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert b"storage.delete.enabeld" in out
    proc = serve(["--addr", "127.0.0.1:0"], tmp_path, {"PYREG_STORAGE_DELETE_ENABLED": "perhaps"})
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2 and b"storage.delete.enabled" in out


def test_json_logs(tmp_path: Path) -> None:
    import json

    port = free_port()
    proc = serve(["--addr", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d")], tmp_path,
                 {"PYREG_LOG_FORMAT": "json"})
    try:
        wait_up(f"http://127.0.0.1:{port}", proc)
        assert httpx.get(f"http://127.0.0.1:{port}/v2/nobody/manifests/x").status_code == 404
    finally:
        stop(proc)
    assert proc.stdout is not None
    lines = [json.loads(line) for line in proc.stdout.read().decode().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "msg"} <= set(entry) for entry in lines)
    access = [e for e in lines if e["logger"] == "pyreg.access"]
    assert {"method": "GET", "path": "/v2/nobody/manifests/x", "status": 404}.items() <= access[-1].items()
