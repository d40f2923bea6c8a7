"""Issue 10, the local store: an image's setuid files, file capabilities, device nodes and layer
content never reach another local user of the host, whatever path they arrive by.

The hostile image is built offline (``tests.images.build_setuid_image``): a setuid-root, a
setgid-root and a ``cap_dac_read_search`` copy of the host's ``cat``, a 0666 device node and a
layer file. It is pulled through a real ``pyreg serve``, loaded from an archive, extracted in
process, run — then an attacker, a forked child that becomes ``nobody`` (uid/gid 65534, no
groups, no capabilities, as ``tests/test_extract.py`` does), tries to ``lstat`` every path below
the store root, list the root, and execute the setuid and capability ``cat`` on a canary: a file
of ours, 0600 root, whose content must never come back. Nothing setuid is ever run against a
real host file.

Where: pytest's ``tmp_path`` lies below ``/tmp/pytest-of-root`` (0700), where nobody cannot go in
any case, so a test there would prove nothing. The stores live in a directory made by
``mkdtemp`` and opened 0755, as ``/var/lib`` is, and removed afterwards (as
``tests/test_runtime_rootless.py`` does). Each attack also reaches one public file there: proof
that the attacker could have seen what was left in its way.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pyreg.client import archive
from pyreg.runtime import images as run_images
from pyreg.runtime import state
from pyreg.runtime.extract import extract_layer
from pyreg.storage.digest import Digest
from pyreg.storage.localstore import LocalStore, StoreError
from pyreg.storage.private import UnsafeDirError
from tests import images
from tests.fixtures.client import mem_image
from tests.fixtures.runtime import RuntimeEnv, mounts_mentioning, require_root_runtime

NOBODY = 65534
OWNER = 65533  # an unprivileged store owner (no passwd entry needed to become it)
NAME = "localhost:5000/team/setuid:latest"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as other users")


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def setuid_image(tmp_path_factory: pytest.TempPathFactory) -> images.TestImage:
    return images.build_setuid_image(tmp_path_factory.mktemp("setuid-image"))


@pytest.fixture(scope="module")
def setuid_image_nodev(tmp_path_factory: pytest.TempPathFactory) -> images.TestImage:
    return images.build_setuid_image(tmp_path_factory.mktemp("setuid-image-nodev"), devices=False)


@pytest.fixture
def world() -> Iterator[Path]:
    """A directory every user can traverse, as /var/lib or /home are."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as other users")
    base = Path(tempfile.mkdtemp(prefix="pyreg-perm-"))
    os.chmod(base, 0o755)
    (base / "public").write_text("anyone may read this\n")
    os.chmod(base / "public", 0o644)
    try:
        yield base
    finally:
        left = mounts_mentioning(str(base))
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"mounts left in the host mount table: {left}"


def make_canary(path: Path, uid: int = 0) -> str:
    text = f"CANARY-{os.urandom(12).hex()}"
    path.write_text(text + "\n")
    os.chown(path, uid, uid)
    os.chmod(path, 0o600)
    return text


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def as_user(uid: int, fn: Callable[[], Any], env: dict[str, str] | None = None) -> Any:
    """fn() in a forked child that is uid:uid with no groups and no capabilities; its JSON result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)  # from root to non-root without keep-caps: every capability goes
            os.environ.update(env or {})
            try:
                out: Any = {"ok": fn()}
            except BaseException as e:
                out = {"error": repr(e)}
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    result = json.loads(data)
    assert "error" not in result, result["error"]
    return result["ok"]


def _outcome(path: str) -> str:
    try:
        st = os.lstat(path)
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e))
    if stat.S_ISREG(st.st_mode):
        try:
            with open(path, "rb"):
                return "opened"
        except OSError:
            return "stat"
    return "stat"


def _exec(binary: str, canary: Path) -> str:
    try:
        r = subprocess.run([binary, str(canary)], capture_output=True, timeout=30)
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e))
    return f"ran ({r.returncode}): {r.stdout!r} {r.stderr!r}"


def every_path_below(root: Path) -> list[str]:
    """Every path under ``root`` (not root itself), listed by root: what the attacker tries."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        out += [os.path.join(dirpath, n) for n in dirnames + filenames]
    return sorted(out)


def attack(root: Path, canary: Path, world: Path, execs: Sequence[str] = (), uid: int = NOBODY,
           extra: Sequence[str] = ()) -> dict[str, Any]:
    """What ``uid`` manages below ``root``: each path's outcome, a listing, exec'ing ``execs`` on
    the canary. Returns the child's report, checked for the public control."""
    paths = every_path_below(root) + list(extra)

    def probe() -> dict[str, Any]:
        report: dict[str, Any] = {"paths": {p: _outcome(p) for p in paths}}
        try:
            report["listing"] = sorted(os.listdir(root))
        except OSError as e:
            report["listing"] = errno.errorcode.get(e.errno or 0, str(e))
        report["execs"] = {b: _exec(b, canary) for b in execs}
        report["public"] = _outcome(str(world / "public"))
        return report

    report: dict[str, Any] = as_user(uid, probe)
    assert report["public"] == "opened", "the attacker could not even reach a public file"
    return report


def assert_out_of_reach(report: dict[str, Any], canary_text: str) -> None:
    reached = {p: o for p, o in report["paths"].items() if o != "EACCES"}
    assert not reached, f"another user reaches {len(reached)} paths: {dict(list(reached.items())[:8])}"
    assert report["listing"] == "EACCES", report["listing"]
    ran = {b: o for b, o in report["execs"].items() if o != "EACCES"}
    assert not ran, ran
    assert canary_text not in json.dumps(report)


def hostile_files(store: Path) -> dict[str, Path]:
    """The hostile layer's files in an extracted store (found as root)."""
    found = {}
    for diff in (store / "layers" / "sha256").glob("*/diff"):
        for rel in images.SETUID_FILES:
            if os.path.lexists(diff / rel):
                found[rel] = diff / rel
    return found


def assert_bits_kept(files: dict[str, Path], devices: bool = True, owner: int = 0) -> None:
    """The store keeps what the image says (a container needs its setuid su): only out of reach."""
    suid = files["usr/local/bin/suid-cat"].stat()
    assert suid.st_mode & stat.S_ISUID and suid.st_uid == owner
    assert files["usr/local/bin/sgid-cat"].stat().st_mode & stat.S_ISGID
    if devices:
        assert os.getxattr(files["usr/local/bin/cap-cat"], "security.capability") == \
            images.file_capability(images.CAP_DAC_READ_SEARCH)
        assert stat.S_ISCHR(files["dev/hostile-null"].lstat().st_mode)


def put_image(store: LocalStore, image: images.TestImage, name: str = NAME) -> None:
    with store.writing():
        for digest in [*image.blob_digests, image.manifest_digest]:
            store.put_blob_file(image.blob_path(digest), digest)
        store.tag(name, image.manifest_digest, images.OCI_MANIFEST, len(image.manifest))


def execs_in(files: dict[str, Path]) -> list[str]:
    return [str(files[f"usr/local/bin/{b}"]) for b in ("suid-cat", "sgid-cat", "cap-cat")]


# --------------------------------------------------------------------------- modes, any user


def test_store_modes_whatever_the_umask(tmp_path: Path) -> None:
    """Under ``umask 0`` every directory of the store is 0700 and no file is writable by others,
    including a partial download and a docker-archive layer while it streams in."""
    image = mem_image({"bin/x": b"x"}, {"etc/y": b"y"})
    seen: list[int] = []

    class Spy:
        """A docker-save layer stream that looks at the ingest file while it is being written."""

        def __init__(self, store: LocalStore) -> None:
            self.store, self.left = store, [b"a" * 10, b"b" * 10]

        def read(self, n: int = -1) -> bytes:
            for p in (self.store.root / "ingest").iterdir():
                seen.append(stat.S_IMODE(p.stat().st_mode))
            return self.left.pop(0) if self.left else b""

    with umask(0):
        store = LocalStore(tmp_path / "deep" / "store")
        with store.writing():
            for digest, data in image.blobs().items():
                store.put_blob(data, digest)
            store.tag(NAME, image.manifest_digest, images.OCI_MANIFEST, len(image.manifest))
        store.resolve(NAME, extractor=extract_layer)
        with store.blob_writer(Digest.of(b"partial"), 7) as w:
            w.write(b"par")  # interrupted: stays in ingest/ for a resume
        store.ingest_stream(Spy(store))  # type: ignore[arg-type]
    assert seen and all(m == 0o600 for m in seen), [oct(m) for m in seen]
    assert stat.S_IMODE((tmp_path / "deep").stat().st_mode) == 0o700  # a missing parent: 0700 too
    for path in [store.root, *map(Path, every_path_below(store.root))]:
        if "diff" in path.relative_to(store.root).parts:
            continue  # the image's own modes, out of reach below a 0700 chain-ID directory
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_dir():
            assert mode == 0o700, f"{path}: {oct(mode)}"
        else:
            assert not mode & 0o022, f"{path}: {oct(mode)}"
    partial = store.root / "ingest" / f"sha256-{Digest.of(b'partial').hex}"
    assert stat.S_IMODE(partial.stat().st_mode) == 0o600


def test_save_is_private_and_follows_no_planted_symlink(tmp_path: Path) -> None:
    """``pyreg save`` under ``umask 0``: the archive is 0600 (as docker save's), and a symlink
    planted where an older pyreg wrote its fixed ``.NAME.partial`` is not followed."""
    image = mem_image({"a": b"a"})
    store = LocalStore(tmp_path / "store")
    with store.writing():
        for digest, data in image.blobs().items():
            store.put_blob(data, digest)
        record = store.tag(NAME, image.manifest_digest, images.OCI_MANIFEST, len(image.manifest))
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    out = tmp_path / "shared" / "img.tar"
    out.parent.mkdir()
    (out.parent / ".img.tar.partial").symlink_to(victim)
    with umask(0):
        archive.save([record], store, out)
    assert victim.read_bytes() == b"precious\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in out.parent.iterdir()) == [".img.tar.partial", "img.tar"]
    loaded = LocalStore(tmp_path / "again")
    assert [r.name for r in archive.load(out, loaded)] == [NAME]


# --------------------------------------------------------------------------- attacks, as root


@needs_root
@pytest.mark.root
@pytest.mark.filesystem_only
def test_pulled_image_is_out_of_other_users_reach(world: Path, setuid_image: images.TestImage,
                                                  registry_server: Any) -> None:
    """The issue's reproduction: pushed to a real ``pyreg serve``, pulled (and extracted) by
    root under ``umask 0``; ``nobody`` reaches nothing below the store root and the setuid and
    capability ``cat`` never read the canary. The bits themselves are kept."""
    env = RuntimeEnv(world)
    canary = world / "canary"
    text = make_canary(canary)
    host = registry_server.host
    env.run("push", f"{setuid_image.layout}:{setuid_image.tag}", f"{host}/team/setuid:latest", check=True,
            env={"PYREG_REGISTRY": host}, timeout=300)
    with umask(0):
        env.run("pull", f"{host}/team/setuid:latest", check=True, env={"PYREG_REGISTRY": host}, timeout=300)
    files = hostile_files(env.store)
    assert sorted(files) == sorted(images.SETUID_FILES)
    assert_bits_kept(files)
    report = attack(env.store, canary, world, execs_in(files))
    assert len(report["paths"]) > 100  # the whole busybox tree was tried
    assert_out_of_reach(report, text)


@needs_root
def test_extraction_is_out_of_reach_before_the_rename(world: Path, setuid_image: images.TestImage) -> None:
    """Between extraction and the rename into ``layers/``, the setuid file sits in the staging
    dir: nobody can reach it there either."""
    canary = world / "canary"
    text = make_canary(canary)
    store = LocalStore(world / "store")
    put_image(store, setuid_image)
    reports = []

    def spying(blob: Path, dest: Path, media_type: str) -> object:
        result = extract_layer(blob, dest, media_type)
        staged = {rel: dest / rel for rel in images.SETUID_FILES if os.path.lexists(dest / rel)}
        if staged:
            assert stat.S_ISUID & (dest / "usr/local/bin/suid-cat").stat().st_mode
            reports.append(attack(store.root, canary, world, execs_in(staged)))
        return result

    with umask(0):
        store.resolve(NAME, extractor=spying)
    assert len(reports) == 1
    staged_paths = [p for p in reports[0]["paths"] if "/layers/.ingest/" in p and p.endswith("suid-cat")]
    assert staged_paths, "the attack did not see the staging area"
    assert_out_of_reach(reports[0], text)


@needs_root
def test_store_of_an_older_pyreg_is_tightened_on_open(world: Path, setuid_image: images.TestImage) -> None:
    """A store left 0755 by an older pyreg: the attack works on it (control), and no longer once
    any pyreg command has opened the store. The image's own modes are left alone."""
    canary = world / "canary"
    text = make_canary(canary)
    store = LocalStore(world / "store")
    put_image(store, setuid_image)
    store.resolve(NAME, extractor=extract_layer)
    files = hostile_files(store.root)
    for path in [store.root, *map(Path, every_path_below(store.root))]:
        if path.is_dir() and not path.is_symlink() and "diff" not in path.relative_to(store.root).parts:
            os.chmod(path, 0o755)  # what an older pyreg left; diff/ is the image's own 0755
    before = attack(store.root, canary, world, [str(files["usr/local/bin/suid-cat"])])
    assert text in before["execs"][str(files["usr/local/bin/suid-cat"])], before["execs"]

    LocalStore(store.root)  # any command: pull, images, run …
    assert_out_of_reach(attack(store.root, canary, world, execs_in(files)), text)
    assert_bits_kept(files)
    diff = files["usr/local/bin/suid-cat"].parents[3]
    assert diff.name == "diff" and stat.S_IMODE(diff.stat().st_mode) == 0o755
    assert stat.S_IMODE(diff.parent.stat().st_mode) == 0o700


@needs_root
def test_rootless_store_is_private(world: Path, setuid_image_nodev: images.TestImage) -> None:
    """A non-root user's store (the XDG default below a 0755 home): its setuid-to-the-owner files
    stay out of another user's reach, so nobody becomes that user."""
    home = world / "home"
    home.mkdir()
    os.chown(home, OWNER, OWNER)
    canary = home / "canary"
    text = make_canary(canary, OWNER)
    image = setuid_image_nodev
    blobs = {d: image.blob(d) for d in [*image.blob_digests, image.manifest_digest]}

    def pull_and_extract() -> str:
        store = LocalStore()  # default root: $XDG_DATA_HOME or ~/.local/share, + /pyreg
        with umask(0), store.writing():
            for digest, data in blobs.items():
                store.put_blob(data, digest)
            store.tag(NAME, image.manifest_digest, images.OCI_MANIFEST, len(image.manifest))
            store.resolve(NAME, extractor=extract_layer)
        return str(store.root)

    env = {"HOME": str(home), "PYREG_CONFIG": str(home / "none.json")}
    with _without("PYREG_STORE", "XDG_DATA_HOME"):
        root = Path(as_user(OWNER, pull_and_extract, env))
    assert root == home / ".local" / "share" / "pyreg"
    for d in (home / ".local", home / ".local" / "share", root):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    files = hostile_files(root)
    assert_bits_kept(files, devices=False, owner=OWNER)
    report = attack(root, canary, world, execs_in(files), extra=[str(home / ".local" / "share")])
    assert_out_of_reach(report, text)


@contextlib.contextmanager
def _without(*names: str) -> Iterator[None]:
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


@needs_root
@pytest.mark.root
def test_container_state_is_out_of_reach(world: Path, setuid_image: images.TestImage) -> None:
    """A running container's upper dir (where whatever it makes setuid lands, on a host mount
    that honours setuid), its rootfs, state and log: none reachable by another user, neither
    through the run root nor through /proc/PID/root."""
    require_root_runtime()
    env = RuntimeEnv(world)
    canary = world / "canary"
    text = make_canary(canary)
    env.load_image(setuid_image, "setuid")
    try:
        with umask(0):
            r = env.run("run", "-d", "--name", "s", "setuid", "sh", "-c",
                        "cp /bin/busybox /tmp/planted && chmod 4755 /tmp/planted && touch /tmp/ready "
                        "&& exec sleep 600", check=True, timeout=300)
        cid = r.stdout.strip()
        upper = env.run_root / "containers" / cid / "upper"

        def ready() -> dict[str, Any] | None:
            rec = env.state(cid)
            up = rec.get("status") == "running" and rec.get("pid") and (upper / "tmp" / "ready").exists()
            return rec if up else None

        rec = _wait_for(ready)
        planted = upper / "tmp" / "planted"
        assert planted.stat().st_mode & stat.S_ISUID and planted.stat().st_uid == 0
        assert stat.S_IMODE(env.run_root.stat().st_mode) == 0o700
        proc_root = f"/proc/{rec['pid']}/root"
        report = attack(env.run_root, canary, world, [str(planted), f"{proc_root}/usr/local/bin/suid-cat"],
                        extra=[f"{proc_root}/usr/local/bin/suid-cat", f"{proc_root}/etc/image-secret"])
        assert_out_of_reach(report, text)
    finally:
        env.run("rm", "-f", "s")
        env.cleanup()


def _wait_for(cond: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(KeyError):
            got = cond()
            if got:
                return got
        time.sleep(0.05)
    raise TimeoutError("condition not met")


# --------------------------------------------------------------------------- directories of others


@needs_root
def test_another_users_store_is_refused(world: Path) -> None:
    """A store someone else owns, or that sits in a directory someone else owns, could be
    swapped under root's feet (a layer become a symlink to /): refused, with the reason."""
    theirs = world / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(StoreError, match="belongs to uid 65534"):
        LocalStore(theirs)
    with pytest.raises(StoreError, match=r"inside .*theirs, which belongs to uid 65534"):
        LocalStore(theirs / "store")
    shared = world / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # world-writable without the sticky bit
    with pytest.raises(StoreError, match="anyone may write to"):
        LocalStore(shared / "store")
    os.chmod(shared, 0o1777)  # as /tmp: fine
    assert stat.S_IMODE(LocalStore(shared / "store").root.stat().st_mode) == 0o700


@needs_root
def test_run_root_squatted_or_wide_or_poisoned(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run root: one in a directory another user made first (the ``/tmp/pyreg-$UID``
    squat) is refused before anything runs; an old 0755 one is tightened; a resolution cache
    that others could have written is not believed."""
    squat = world / "squat"
    squat.mkdir()
    os.chown(squat, NOBODY, NOBODY)
    env = RuntimeEnv(world)
    r = env.run("run", "--rm", "busybox", "true", env={"PYREG_RUN_ROOT": str(squat / "pyreg")})
    assert r.returncode != 0 and "belongs to uid 65534" in r.stderr, r.stderr
    assert not (squat / "pyreg" / "containers").exists()
    monkeypatch.setenv("PYREG_RUN_ROOT", str(squat / "pyreg"))
    with pytest.raises(UnsafeDirError):
        state.ensure_run_root()

    old = world / "old-run"
    (old / "containers").mkdir(parents=True)
    os.chmod(old, 0o755)
    os.chmod(old / "containers", 0o755)
    monkeypatch.setenv("PYREG_RUN_ROOT", str(old))
    state.ensure_run_root()
    assert stat.S_IMODE(old.stat().st_mode) == 0o700
    assert stat.S_IMODE((old / "containers").stat().st_mode) == 0o700

    # an older pyreg under umask 0 left images.json 0666: anyone could have pointed it at /
    run_images._remember("evil", {"name": "evil", "digest": "", "config": {}, "layers": ["/"],
                                  "fingerprints": [], "warning": None})
    assert run_images._cached("evil") is not None
    os.chmod(old / "images.json", 0o666)
    assert run_images._cached("evil") is None
    os.chmod(old / "images.json", 0o600)
    os.chown(old / "images.json", NOBODY, NOBODY)
    assert run_images._cached("evil") is None
