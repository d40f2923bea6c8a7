"""Access logs (registry/accesslog.py): one line per request from a real ``pyreg serve``, JSON or text."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.registry import sha256

pytestmark = pytest.mark.filesystem_only  # about HTTP and logs, not storage

AGENT = "access-log-test/1"


def access_lines(server: Any) -> list[dict[str, Any]]:
    server.stop()  # every line flushed
    out = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry["logger"] == "pyreg.access":
                out.append(entry)
    return out


def test_json_access_log(make_registry_server: Callable[..., Any], htpasswd_users: Path) -> None:
    server = make_registry_server({"log": {"format": "json", "accesslog": {"disabled": False}},
                                   "auth": {"htpasswd": {"path": str(htpasswd_users)}}})
    blob = b"x" * 1234
    ids = []
    with httpx.Client(base_url=server.url, timeout=30, headers={"User-Agent": AGENT}) as http:
        r = http.get("/v2/")
        assert r.status_code == 401
        ids.append(r.headers["x-request-id"])
        r = http.post("/v2/team/app/blobs/uploads/", params={"digest": sha256(blob)}, content=blob,
                      auth=("alice", "alice-pw"))
        assert r.status_code == 201
        ids.append(r.headers["x-request-id"])
        r = http.get(f"/v2/team/app/blobs/{sha256(blob)}", auth=("alice", "alice-pw"),
                     headers={"X-Request-Id": "from-the-proxy-42"})
        assert r.status_code == 200 and r.content == blob
        assert r.headers["x-request-id"] == "from-the-proxy-42"  # a sane incoming id is kept
        ids.append(r.headers["x-request-id"])
        r = http.get("/healthz", headers={"X-Request-Id": "bad id with spaces"})
        assert r.headers["x-request-id"] != "bad id with spaces"
        ids.append(r.headers["x-request-id"])
    assert len(set(ids)) == 4

    mine = [e for e in access_lines(server) if e["user_agent"] == AGENT]
    # exactly one line per request; a streamed answer is logged once its body is sent, which can
    # be after the client has already sent its next request: match lines to requests by id
    assert sorted(e["request_id"] for e in mine) == sorted(ids)
    by_id = {e["request_id"]: e for e in mine}
    anon, upload, download, health = (by_id[i] for i in ids)
    for e in mine:
        assert e["msg"] == "request" and e["level"] == "info" and e["time"]
        assert e["remote_addr"].startswith("127.0.0.1:") and e["protocol"] == "HTTP/1.1"
        assert isinstance(e["duration_ms"], float) and e["duration_ms"] >= 0
    assert (anon["method"], anon["path"], anon["status"], anon["user"]) == ("GET", "/v2/", 401, None)
    assert (upload["method"], upload["path"]) == ("POST", "/v2/team/app/blobs/uploads/")
    assert upload["status"] == 201
    assert upload["user"] == "alice" and upload["bytes_in"] == len(blob) and upload["bytes_out"] == 0
    assert upload["query"] == f"digest={sha256(blob).replace(':', '%3A')}"
    assert download["status"] == 200 and download["bytes_out"] == len(blob) and download["user"] == "alice"
    assert health["path"] == "/healthz" and health["status"] == 200


def test_text_access_log(make_registry_server: Callable[..., Any]) -> None:
    server = make_registry_server({"log": {"accesslog": {"disabled": False}}})
    with httpx.Client(base_url=server.url, timeout=30, headers={"User-Agent": AGENT}) as http:
        rid = http.get("/v2/nothing/here/tags/list").headers["x-request-id"]
    server.stop()
    (line,) = [line for line in server.log().splitlines() if rid in line]
    assert "pyreg.access" in line and '"GET /v2/nothing/here/tags/list HTTP/1.1" 404' in line
    assert "uvicorn.access" not in server.log()  # uvicorn's own line would be a second one


def test_disabled(make_registry_server: Callable[..., Any]) -> None:
    server = make_registry_server({"log": {"format": "json", "accesslog": {"disabled": True}}})
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/v2/").headers["x-request-id"]  # request ids all the same
    assert access_lines(server) == []
