"""Every failure of the ``pyreg`` command is one line saying what failed and what to do — never a
traceback — with docker's exit codes (1 for a failed command, 2 for bad usage, 125 for the
runtime's own failures in run/exec, 141 when the reader of our output went away).

Each case runs the real CLI (``python -m pyreg``) in a subprocess with hostile arguments or a
hostile environment, under tmp_path; the only server is a small one on a free loopback port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.client import REPO_ROOT, ClientEnv
from tests.fixtures.registry import free_port


def run(client_env: ClientEnv, *args: str, env: dict[str, str] | None = None, stdin: Any = subprocess.DEVNULL,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    full = dict(client_env.env, **(env or {}))
    return subprocess.run([sys.executable, "-m", "pyreg", *args], env=full, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, input=input,
                          stdin=None if input is not None else stdin)


def one_line(proc: subprocess.CompletedProcess[str], codes: tuple[int, ...] = (1,)) -> str:
    """The process failed with one of ``codes`` and said why in one ``pyreg…`` line."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in codes, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("pyreg"), proc.stderr
    errors = [line for line in lines if line.startswith("pyreg")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


# ------------------------------------------------------------------------------ output pipe closed


@pytest.mark.parametrize("args", [["--help"], ["images", "--json"], ["images"], ["tags", "--help"],
                                  ["--version"]])
def test_reader_gone_is_quiet(client_env: ClientEnv, args: list[str]) -> None:
    """``pyreg --help | head -1``: the pipe is closed before pyreg writes (git's and docker's 141)."""
    (client_env.store).mkdir(parents=True)
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.Popen([sys.executable, "-m", "pyreg", *args], stdout=write,
                            stderr=subprocess.PIPE, env=client_env.env, cwd=REPO_ROOT, text=True)
    os.close(write)
    _, err = proc.communicate(timeout=60)
    assert err == "", err
    assert proc.returncode in (0, 141)
    if args != ["tags", "--help"]:  # argparse swallows its own write error and exits 0
        assert proc.returncode == 141


# ------------------------------------------------------------------------------ the local store


@pytest.mark.parametrize("args", [["tag", "a", "b"], ["rmi", "a"], ["prune"], ["save", "a", "-o", "x.tar"],
                                  ["inspect", "a"], ["pull", "127.0.0.1:1/a"]])
@pytest.mark.parametrize("where", ["file", "sysfs"])
def test_store_that_cannot_be_made(client_env: ClientEnv, tmp_path: Path, args: list[str],
                                   where: str) -> None:
    if where == "file":
        store = tmp_path / "a-file"
        store.write_text("")
    else:
        store = Path("/sys/pyreg-no-such-store")  # sysfs refuses mkdir: EPERM, nothing is made
    line = one_line(run(client_env, *args, env={"PYREG_STORE": str(store)}))
    assert str(store) in line and "PYREG_STORE" in line, line


def test_images_does_not_create_the_store(client_env: ClientEnv, tmp_path: Path) -> None:
    missing = tmp_path / "none"
    proc = run(client_env, "images", "--json", env={"PYREG_STORE": str(missing)})
    assert proc.returncode == 0 and json.loads(proc.stdout) == [], proc.stderr
    assert not missing.exists()
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert run(client_env, "images", env={"PYREG_STORE": str(a_file)}).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(),
                    reason="needs root and setpriv")
def test_store_not_writable_for_this_user(client_env: ClientEnv, tmp_path: Path) -> None:
    """A store owned by root, used by nobody (a real EACCES, not a simulated one)."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="pyreg-cli-"))  # tmp_path is 0700: nobody cannot enter
    try:
        os.chmod(base, 0o755)
        env = dict(client_env.env, PYREG_STORE=str(base / "store"), HOME=str(base),
                   PYREG_CONFIG=str(base / "none.json"), DOCKER_CONFIG=str(base))
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               sys.executable, "-m", "pyreg", "tag", "a", "b"],
                              env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        line = one_line(proc)
        assert "Permission denied" in line and "PYREG_STORE" in line, line
    finally:
        import shutil

        shutil.rmtree(base)


# ------------------------------------------------------------------------------ the run root


@pytest.mark.parametrize("args", [["ps"], ["logs", "x"], ["stop", "x"], ["rm", "x"], ["kill", "x"]])
def test_run_root_that_is_a_file(client_env: ClientEnv, tmp_path: Path, args: list[str]) -> None:
    a_file = tmp_path / "run-root"
    a_file.write_text("")
    line = one_line(run(client_env, *args, env={"PYREG_RUN_ROOT": str(a_file)}))
    assert str(a_file) in line, line


# ------------------------------------------------------------------------------ login


def test_login_without_a_terminal(client_env: ClientEnv) -> None:
    assert "non TTY" in one_line(run(client_env, "login", "127.0.0.1:1", "-u", "alice"))
    assert "non TTY" in one_line(run(client_env, "login", "127.0.0.1:1"))
    assert "--username" in one_line(run(client_env, "login", "127.0.0.1:1", "--password-stdin", input="pw\n"))
    assert "mutually exclusive" in one_line(run(client_env, "login", "127.0.0.1:1", "-u", "a", "-p", "b",
                                                "--password-stdin", input="pw\n"))
    # --password-stdin is the non-interactive way: it gets as far as the (absent) registry
    line = one_line(run(client_env, "login", f"127.0.0.1:{free_port()}", "-u", "a", "--password-stdin",
                        input="pw\n"))
    assert "cannot reach" in line, line


# ------------------------------------------------------------------------------ load


@pytest.mark.parametrize("content", [b"", b"not a tar at all\n" * 100, b"\x1f\x8b\x08\x00garbage",
                                     None])
def test_load_of_something_else(client_env: ClientEnv, tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "in.tar"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    line = one_line(run(client_env, "load", "-i", str(path)))
    assert str(path) in line, line


def test_load_of_a_tar_with_malformed_metadata(client_env: ClientEnv, tmp_path: Path) -> None:
    import io
    import tarfile

    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        data = json.dumps([{"Layers": []}]).encode()  # no "Config"
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert "malformed" in one_line(run(client_env, "load", "-i", str(path)))


# ------------------------------------------------------------------------------ serve


@pytest.mark.parametrize("where", ["file", "missing-parent-in-proc", "sysfs"])
def test_serve_with_an_unusable_data_dir(client_env: ClientEnv, tmp_path: Path, where: str) -> None:
    target = {"file": tmp_path / "a-file", "missing-parent-in-proc": Path("/proc/no-such/dir"),
              "sysfs": Path("/sys/pyreg-no-such-data")}[where]
    if where == "file":
        target.write_text("")
    line = one_line(run(client_env, "serve", "--addr", f"127.0.0.1:{free_port()}", "--data-dir", str(target)))
    assert str(target) in line and "--data-dir" in line, line


# ------------------------------------------------------------------------------ a failing registry


@pytest.fixture
def failing_registry() -> Iterator[str]:
    """A registry whose every answer is a 500 carrying an X-Request-Id, as pyreg's own sends."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/v2/":
                body = b"{}"
                self.send_response(200)
            else:
                body = json.dumps({"errors": [{"code": "UNKNOWN", "message": "disk on fire"}]}).encode()
                self.send_response(500)
                self.send_header("X-Request-Id", "req-4f2a9c")
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_server_error_names_the_request_id(client_env: ClientEnv, failing_registry: str) -> None:
    for args in (["tags", f"{failing_registry}/team/app"], ["pull", f"{failing_registry}/team/app:1"]):
        line = one_line(run(client_env, *args))
        assert "500" in line and "req-4f2a9c" in line and "disk on fire" in line, line


# ------------------------------------------------------------------------------ anything else hostile


HOSTILE_ARGS = [
    ["no-such-command"], ["pull"], ["pull", ""], ["pull", "UPPER/case"], ["pull", "a" * 300],
    ["pull", "x@sha256:nothex"], ["pull", "127.0.0.1:1/x", "--platform", "linux"],
    ["pull", "127.0.0.1:1/x", "--parallel", "zero"], ["push", "/no/such/dir", "127.0.0.1:1/x"],
    ["push", "127.0.0.1:1/x", "--chunk-size", "lots"], ["copy", "a"], ["tags", ":::"],
    ["catalog", "http://[::1"], ["inspect", ""], ["inspect", "--remote", "127.0.0.1:1/x"],
    ["delete", "127.0.0.1:1/x"], ["rmi", "nothing-here"], ["tag", "nothing-here", "UPPER"],
    ["save", "nothing-here", "-o", "/proc/no/such"], ["logout", "127.0.0.1:1"],
    ["load"], ["load", "-i", "/no/such/file.tar"], ["images", "--bogus-flag"],
    ["pull", "127.0.0.1:1/x", "--ca-file", "/no/such/ca.pem"],
    # issue 12's habits: logs times, images filters, auth files
    ["logs", "--since", "yesterday", "c"], ["logs", "--until=-1m", "c"],
    ["logs", "--since", "2024-02-30", "c"], ["logs", "--since", "9" * 40 + "x", "c"],
    ["logs", "--until", "", "c"], ["logs", "-t", "--tail", "x", "c"],
    ["images", "--filter", "colour=red"], ["images", "-f", "before=nothing-here"],
    ["images", "-f", "noequals"], ["images", "-f", "dangling=maybe"], ["images", "-f", "since="],
    ["login", "127.0.0.1:1", "-u", "a", "-p", "b", "--authfile", "/proc/no/such/auth.json"],
    ["logout", "127.0.0.1:1", "--authfile", "/proc/self"], ["logout", "127.0.0.1:1", "--authfile", ""],
]


@pytest.mark.parametrize("args", HOSTILE_ARGS, ids=lambda a: " ".join(a)[:40] or "empty")
def test_hostile_arguments(client_env: ClientEnv, args: list[str]) -> None:
    proc = run(client_env, *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (1, 2), (proc.returncode, proc.stderr)
    assert proc.stderr.strip(), "a failure says why"


HOSTILE_ENVS: list[dict[str, str]] = [
    {"PYREG_CONFIG": "{config-dir}"}, {"PYREG_CONFIG": "{garbage}"}, {"PYREG_CONFIG": "{list}"},
    {"DOCKER_CONFIG": "{garbage-dir}"}, {"PYREG_REGISTRY": "not a registry!"},
    {"PYREG_PARALLEL": "many"}, {"PYREG_CHUNK_SIZE": "huge"}, {"PYREG_MAX_CONFIG_SIZE": "big"},
    {"PYREG_LAYER_MAX_RATIO": "-3"}, {"PYREG_CA_FILE": "/no/such/ca.pem"},
    {"PYREG_CERTS_D": "{certs-half-pair}"},
    {"REGISTRY_AUTH_FILE": "{garbage}"}, {"REGISTRY_AUTH_FILE": "{config-dir}"},
    {"REGISTRY_AUTH_FILE": "", "XDG_RUNTIME_DIR": "{garbage-xdg}"}, {"XDG_CONFIG_HOME": "{garbage-xdg}"},
]


@pytest.mark.parametrize("env", HOSTILE_ENVS, ids=lambda e: ",".join(e))
@pytest.mark.parametrize("args", [["pull", "127.0.0.1:1/x"], ["images"], ["login", "127.0.0.1:1", "-u", "a",
                                                                          "--password-stdin"]])
def test_hostile_environments(client_env: ClientEnv, tmp_path: Path, env: dict[str, str],
                              args: list[str]) -> None:
    (tmp_path / "garbage").write_text("{not json")
    (tmp_path / "list").write_text("[1, 2]")
    (tmp_path / "config-dir").mkdir()
    (tmp_path / "garbage-dir").mkdir()
    (tmp_path / "garbage-dir" / "config.json").write_text("{not json")
    (tmp_path / "garbage-xdg" / "containers").mkdir(parents=True)
    (tmp_path / "garbage-xdg" / "containers" / "auth.json").write_text('{"auths": [')
    half = tmp_path / "certs-half-pair" / "127.0.0.1:1"
    half.mkdir(parents=True)
    (half / "client.cert").write_text("")
    values = {k: v.format(**{n: str(tmp_path / n) for n in ("config-dir", "garbage", "list", "garbage-dir",
                                                             "certs-half-pair", "garbage-xdg")})
              for k, v in env.items()}
    proc = run(client_env, *args, env=values, input="pw\n")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1, 2), (proc.returncode, proc.stderr)
    if proc.returncode:
        one_line(proc, (1, 2))
