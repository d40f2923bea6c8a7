"""The storage-driver conformance suite: every driver must pass all of it.

Use it by subclassing :class:`DriverSuite` in a test module and providing a ``make_driver``
fixture: a zero-argument factory that returns a *new, independent* driver instance on the same
storage each time it is called (a second process or replica, in effect; no state may be shared
in memory between two instances). See tests/test_drivers.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pyreg.storage.driver import Driver, FileWriter
from pyreg.storage.errors import InvalidOffsetError, InvalidPathError, PathNotFoundError

MiB = 1 << 20
MakeDriver = Callable[[], Any]

INVALID_PATHS = ["", "relative/path", "/a/../b", "/a/./b", "/a//b", "/trailing/", "/sp ace", "/a/%2e"]


async def read_all(driver: Any, path: str, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in driver.reader(path, offset, length)])


def blob(size: int, seed: int = 0) -> bytes:
    """Deterministic non-repeating bytes (repeating data would hide offset bugs)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 32
        counter += 1
    return bytes(out[:size])


async def settled_version(driver: Any, path: str) -> str:
    """The version token of ``path`` once the driver gives one: a filesystem withholds it for a
    few milliseconds after a change (see storage/filesystem.py: RACY_NS)."""
    for _ in range(1000):
        version = (await driver.stat(path)).version
        if version is not None:
            assert isinstance(version, str) and version
            return version
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path}: no version token after 10 s")


class DriverSuite:
    """Conformance tests; subclasses provide the ``make_driver`` fixture."""

    @pytest.fixture
    def driver(self, make_driver: MakeDriver) -> Any:
        return make_driver()

    # -- small files ---------------------------------------------------------------------------

    async def test_protocol(self, driver: Any) -> None:
        assert isinstance(driver, Driver)
        assert isinstance(driver.name, str) and driver.name

    async def test_put_get(self, driver: Any) -> None:
        await driver.put_content("/a/b/c", b"hello")
        assert await driver.get_content("/a/b/c") == b"hello"
        await driver.put_content("/a/b/c", b"replaced")
        assert await driver.get_content("/a/b/c") == b"replaced"
        await driver.put_content("/empty", b"")
        assert await driver.get_content("/empty") == b""
        data = bytes(range(256)) * 17
        await driver.put_content("/bin:ary=1+2", data)
        assert await driver.get_content("/bin:ary=1+2") == data

    async def test_get_missing(self, driver: Any) -> None:
        with pytest.raises(PathNotFoundError):
            await driver.get_content("/nope")
        await driver.put_content("/dir/file", b"x")
        with pytest.raises(PathNotFoundError):
            await driver.get_content("/dir/other")

    async def test_seen_by_another_instance(self, driver: Any, make_driver: MakeDriver) -> None:
        await driver.put_content("/shared", b"one")
        other = make_driver()
        assert await other.get_content("/shared") == b"one"
        await other.put_content("/shared", b"two")
        assert await driver.get_content("/shared") == b"two"

    @pytest.mark.parametrize("bad", INVALID_PATHS)
    async def test_invalid_paths(self, driver: Any, bad: str) -> None:
        with pytest.raises(InvalidPathError):
            await driver.put_content(bad, b"x")
        with pytest.raises(InvalidPathError):
            await driver.get_content(bad)
        with pytest.raises(InvalidPathError):
            await driver.stat(bad)
        with pytest.raises(InvalidPathError):
            await driver.list(bad)
        with pytest.raises(InvalidPathError):
            await driver.delete(bad)
        with pytest.raises(InvalidPathError):
            await driver.writer(bad)
        with pytest.raises(InvalidPathError):
            await driver.move("/ok", bad)
        with pytest.raises(InvalidPathError):
            await read_all(driver, bad)
        with pytest.raises(InvalidPathError):
            _ = [i async for i in driver.walk(bad)]

    # -- stat, list, walk ----------------------------------------------------------------------

    async def test_stat(self, driver: Any) -> None:
        await driver.put_content("/s/t/file", b"12345")
        info = await driver.stat("/s/t/file")
        assert (info.path, info.size, info.is_dir) == ("/s/t/file", 5, False)
        assert info.modtime.tzinfo is not None
        d = await driver.stat("/s/t")
        assert d.is_dir and d.path == "/s/t"
        assert (await driver.stat("/s")).is_dir
        with pytest.raises(PathNotFoundError):
            await driver.stat("/s/t/missing")
        with pytest.raises(PathNotFoundError):
            await driver.stat("/s/t/fi")  # a prefix of a name is not a path

    async def test_list(self, driver: Any) -> None:
        for path in ("/l/a", "/l/b", "/l/sub/c", "/l/sub/deeper/d", "/lx/e"):
            await driver.put_content(path, b"x")
        assert sorted(await driver.list("/l")) == ["/l/a", "/l/b", "/l/sub"]
        assert sorted(await driver.list("/l/sub")) == ["/l/sub/c", "/l/sub/deeper"]
        assert sorted(await driver.list("/")) == ["/l", "/lx"]
        with pytest.raises(PathNotFoundError):
            await driver.list("/missing")
        with pytest.raises(PathNotFoundError):
            await driver.list("/l/a")  # a file is not a directory

    async def test_walk(self, driver: Any) -> None:
        files = {"/w/a": 1, "/w/x/b": 2, "/w/x/y/c": 3, "/w/z/d": 4}
        for path, size in files.items():
            await driver.put_content(path, b"x" * size)
        await driver.put_content("/outside", b"x")
        found = {info.path: info async for info in driver.walk("/w")}
        assert {p: i.size for p, i in found.items() if not i.is_dir} == files
        assert {p for p, i in found.items() if i.is_dir} == {"/w/x", "/w/x/y", "/w/z"}
        everything = {info.path async for info in driver.walk("/")}
        assert {"/w", "/outside", "/w/x/y/c"} <= everything
        with pytest.raises(PathNotFoundError):
            _ = [i async for i in driver.walk("/missing")]

    # -- version tokens (FileInfo.version) -----------------------------------------------------

    async def test_version_is_stable_while_untouched(self, driver: Any, make_driver: MakeDriver) -> None:
        await driver.put_content("/v/a", b"one")
        version = await settled_version(driver, "/v/a")
        assert (await driver.stat("/v/a")).version == version
        assert (await make_driver().stat("/v/a")).version == version  # another process sees the same
        assert await read_all(driver, "/v/a") == b"one"  # reading changes nothing
        assert (await driver.stat("/v/a")).version == version
        assert (await driver.stat("/v")).version is None  # a directory has none

    async def test_version_changes_on_every_write(self, driver: Any) -> None:
        """Every way a driver can change a stored object gives it another token (or none yet),
        even when the size stays the same."""
        await driver.put_content("/v/b", b"one")
        seen = [await settled_version(driver, "/v/b")]

        async def changed() -> None:
            assert (await driver.stat("/v/b")).version not in seen
            seen.append(await settled_version(driver, "/v/b"))

        await driver.put_content("/v/b", b"two")  # replaced, same size
        await changed()
        w = await driver.writer("/v/b")  # truncated and rewritten
        await w.write(b"six")
        await w.commit()
        await w.close()
        await changed()
        w = await driver.writer("/v/b", append=True)  # appended to
        await w.write(b"!")
        await w.commit()
        await w.close()
        await changed()
        await driver.put_content("/v/other", b"ten!")  # another object moved over it
        await settled_version(driver, "/v/other")
        await driver.move("/v/other", "/v/b")
        await changed()
        assert await driver.get_content("/v/b") == b"ten!"
        assert len(set(seen)) == len(seen)

    # -- move, delete --------------------------------------------------------------------------

    async def test_move(self, driver: Any) -> None:
        await driver.put_content("/m/src", b"payload")
        await driver.put_content("/m/dst", b"old")
        await driver.move("/m/src", "/m/dst")
        assert await driver.get_content("/m/dst") == b"payload"
        with pytest.raises(PathNotFoundError):
            await driver.stat("/m/src")
        await driver.move("/m/dst", "/elsewhere/new/place")
        assert await driver.get_content("/elsewhere/new/place") == b"payload"
        with pytest.raises(PathNotFoundError):
            await driver.move("/m/nothing", "/m/dst2")

    async def test_move_large(self, driver: Any) -> None:
        data = blob(6 * MiB + 3, seed=7)
        w = await driver.writer("/big/src")
        for i in range(0, len(data), MiB):
            await w.write(data[i:i + MiB])
        await w.commit()
        await w.close()
        await driver.move("/big/src", "/big/dst")
        assert (await driver.stat("/big/dst")).size == len(data)
        assert hashlib.sha256(await read_all(driver, "/big/dst")).digest() == hashlib.sha256(data).digest()

    async def test_delete(self, driver: Any) -> None:
        await driver.put_content("/d/keep", b"k")
        await driver.put_content("/d/tree/a", b"a")
        await driver.put_content("/d/tree/sub/b", b"b")
        await driver.put_content("/d/treehouse", b"not below /d/tree")
        await driver.delete("/d/tree")
        with pytest.raises(PathNotFoundError):
            await driver.stat("/d/tree/a")
        with pytest.raises(PathNotFoundError):
            await driver.stat("/d/tree")
        assert sorted(await driver.list("/d")) == ["/d/keep", "/d/treehouse"]
        await driver.delete("/d/keep")
        with pytest.raises(PathNotFoundError):
            await driver.get_content("/d/keep")
        with pytest.raises(PathNotFoundError):
            await driver.delete("/d/keep")
        with pytest.raises(PathNotFoundError):
            await driver.delete("/never/was")

    async def test_deletes_race(self, make_driver: MakeDriver) -> None:
        """Several processes deleting one tree: each returns or says not found, nothing else."""
        for round_ in range(3):
            writer = make_driver()
            for i in range(20):
                await writer.put_content(f"/race{round_}/d{i}/sub/link", b"x")
            results = await asyncio.gather(*(make_driver().delete(f"/race{round_}") for _ in range(4)),
                                           return_exceptions=True)
            assert all(r is None or isinstance(r, PathNotFoundError) for r in results), results
            assert any(r is None for r in results)
            with pytest.raises(PathNotFoundError):
                await make_driver().stat(f"/race{round_}/d0/sub/link")

    async def test_write_races_removal_of_its_directory(self, make_driver: MakeDriver) -> None:
        """A link written while its directory is being removed: either wins, no error escapes."""
        a, b = make_driver(), make_driver()
        for i in range(20):
            await a.put_content(f"/wr/{i}/old", b"x")
            results = await asyncio.gather(a.delete(f"/wr/{i}"), b.put_content(f"/wr/{i}/new/link", b"y"),
                                           return_exceptions=True)
            assert not [r for r in results if isinstance(r, BaseException)
                        and not isinstance(r, PathNotFoundError)], results

    # -- reader --------------------------------------------------------------------------------

    async def test_reader(self, driver: Any) -> None:
        data = blob(3 * MiB + 123, seed=1)
        await driver.put_content("/r/blob", data)
        assert await read_all(driver, "/r/blob") == data
        assert await read_all(driver, "/r/blob", 1000) == data[1000:]
        assert await read_all(driver, "/r/blob", 1000, 5000) == data[1000:6000]
        assert await read_all(driver, "/r/blob", MiB - 1, MiB + 2) == data[MiB - 1:2 * MiB + 1]
        assert await read_all(driver, "/r/blob", len(data) - 10, 100) == data[-10:]
        assert await read_all(driver, "/r/blob", len(data)) == b""
        assert await read_all(driver, "/r/blob", 5, 0) == b""
        with pytest.raises(InvalidOffsetError):
            await read_all(driver, "/r/blob", len(data) + 1)
        with pytest.raises(InvalidOffsetError):
            await read_all(driver, "/r/blob", len(data) + 1, 10)
        await driver.put_content("/r/empty", b"")
        assert await read_all(driver, "/r/empty") == b""
        assert await read_all(driver, "/r/empty", 0, 10) == b""
        with pytest.raises(PathNotFoundError):
            await read_all(driver, "/r/missing")

    async def test_reader_chunks_are_bounded(self, driver: Any) -> None:
        data = blob(4 * MiB, seed=2)
        await driver.put_content("/r/chunks", data)
        sizes = [len(c) async for c in driver.reader("/r/chunks")]
        assert sum(sizes) == len(data)
        assert max(sizes) <= 16 * MiB and len(sizes) >= 1

    # -- writer --------------------------------------------------------------------------------

    async def test_writer_commit(self, driver: Any) -> None:
        w: FileWriter = await driver.writer("/w1/data")
        assert w.size == 0
        await w.write(b"abc")
        await w.write(b"def")
        assert w.size == 6
        await w.commit()
        await w.close()
        assert await driver.get_content("/w1/data") == b"abcdef"
        assert (await driver.stat("/w1/data")).size == 6

    async def test_writer_commit_empty(self, driver: Any) -> None:
        w = await driver.writer("/w2/empty")
        await w.commit()
        await w.close()
        assert await driver.get_content("/w2/empty") == b""

    @pytest.mark.parametrize("chunks", [
        [10, 20, 30],                                   # tiny tails, several writers
        [3 * MiB, 3 * MiB, 6 * MiB + 1, 1],             # crossing the 5 MiB part minimum
        [11 * MiB + 5, 7, 5 * MiB],                     # one writer holds more than a part
    ], ids=["tiny", "straddle", "large"])
    async def test_writer_append_across_instances(self, make_driver: MakeDriver, chunks: list[int]) -> None:
        data = blob(sum(chunks), seed=len(chunks))
        pos = 0
        for i, n in enumerate(chunks):
            d = make_driver()  # a new instance each time: another replica, nothing shared in memory
            w = await d.writer("/up/load/data", append=i > 0)
            assert w.size == pos
            piece = data[pos:pos + n]
            for j in range(0, n, MiB):  # arrive in request-body-sized writes
                await w.write(piece[j:j + MiB])
            pos += n
            assert w.size == pos
            await w.close()
        d = make_driver()
        w = await d.writer("/up/load/data", append=True)
        assert w.size == len(data)
        await w.commit()
        await w.close()
        got = await read_all(d, "/up/load/data")
        assert len(got) == len(data)
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()

    async def test_writer_reopen_without_writing(self, make_driver: MakeDriver) -> None:
        w = await make_driver().writer("/re/data")
        await w.write(b"x" * 100)
        await w.close()
        for _ in range(2):
            w = await make_driver().writer("/re/data", append=True)
            assert w.size == 100
            await w.close()
        w = await make_driver().writer("/re/data", append=True)
        await w.write(b"y")
        await w.commit()
        await w.close()
        assert await make_driver().get_content("/re/data") == b"x" * 100 + b"y"

    async def test_writer_truncates(self, driver: Any) -> None:
        w = await driver.writer("/t/data")
        await w.write(b"old content")
        await w.close()
        w = await driver.writer("/t/data", append=False)
        assert w.size == 0
        await w.write(b"new")
        await w.commit()
        await w.close()
        assert await driver.get_content("/t/data") == b"new"

    async def test_writer_append_to_committed(self, driver: Any) -> None:
        await driver.put_content("/ac/small", b"base")
        w = await driver.writer("/ac/small", append=True)
        assert w.size == 4
        await w.write(b"+more")
        await w.commit()
        await w.close()
        assert await driver.get_content("/ac/small") == b"base+more"

    async def test_writer_cancel(self, make_driver: MakeDriver) -> None:
        d = make_driver()
        w = await d.writer("/c/data")
        await w.write(blob(6 * MiB))
        await w.close()
        w = await make_driver().writer("/c/data", append=True)
        await w.write(b"more")
        await w.cancel()
        with pytest.raises(PathNotFoundError):
            await d.stat("/c/data")
        w = await make_driver().writer("/c/data", append=True)
        assert w.size == 0
        await w.close()

    async def test_writer_closed(self, driver: Any) -> None:
        w = await driver.writer("/closed/data")
        await w.write(b"x")
        await w.close()
        with pytest.raises(ValueError):
            await w.write(b"y")

    async def test_concurrent_writers(self, driver: Any) -> None:
        async def one(i: int) -> None:
            w = await driver.writer(f"/cc/{i}/data")
            await w.write(blob(100_000 + i, seed=i))
            await w.commit()
            await w.close()

        await asyncio.gather(*(one(i) for i in range(8)))
        for i in range(8):
            assert await driver.get_content(f"/cc/{i}/data") == blob(100_000 + i, seed=i)

    # -- locks ---------------------------------------------------------------------------------

    async def test_lock_is_exclusive_across_instances(self, make_driver: MakeDriver) -> None:
        a, b = make_driver(), make_driver()
        held = await a.try_lock("/locks/one")
        assert held is not None
        assert await b.try_lock("/locks/one") is None  # another process or replica
        assert await a.try_lock("/locks/one") is None  # another request of the same process
        other = await b.try_lock("/locks/two")  # locks are per name
        assert other is not None
        await held.check()
        await held.release()
        again = await b.try_lock("/locks/one")
        assert again is not None
        await held.release()  # a second release must not free the new holder's lock
        assert await a.try_lock("/locks/one") is None
        for lock in (again, other):
            await lock.release()

    async def test_lock_race_has_one_winner(self, make_driver: MakeDriver) -> None:
        drivers = [make_driver() for _ in range(8)]
        for _ in range(3):
            got = await asyncio.gather(*(d.try_lock("/locks/race") for d in drivers))
            winners = [lock for lock in got if lock is not None]
            assert len(winners) == 1
            await winners[0].release()

    async def test_lock_names_are_not_content(self, driver: Any) -> None:
        lock = await driver.try_lock("/lk/held")
        assert lock is not None
        await lock.release()
        with pytest.raises(PathNotFoundError):
            await driver.stat("/lk/held")

    # -- snapshot ------------------------------------------------------------------------------

    async def test_snapshot(self, driver: Any) -> None:
        data = blob(2 * MiB + 17, seed=11)
        w = await driver.writer("/snap/src")
        await w.write(data)
        await w.commit()
        await w.close()
        snap = await driver.snapshot("/snap/src", "/snap/frozen", "sha256")
        assert snap.size == len(data)
        assert snap.hexdigest in (None, hashlib.sha256(data).hexdigest())
        assert await read_all(driver, "/snap/frozen") == data
        # What the store keeps, if anything, is the digest of the content (never a guess).
        kept = await driver.stored_digest("/snap/frozen", "sha256")
        assert kept in (None, hashlib.sha256(data).hexdigest())
        assert kept is not None or driver.name != "s3"  # S3 computes it while copying
        with pytest.raises(PathNotFoundError):
            await driver.stat("/snap/src")
        with pytest.raises(PathNotFoundError):
            await driver.snapshot("/snap/src", "/snap/other", "sha256")

    async def test_snapshot_is_frozen_against_a_writer_still_open(self, make_driver: MakeDriver) -> None:
        """A writer that was open across the snapshot (a broken lock) cannot change the copy."""
        first = blob(3 * MiB, seed=12)
        d = make_driver()
        w = await d.writer("/snap2/src")
        await w.write(first)
        await w.commit()
        await w.close()
        late = await make_driver().writer("/snap2/src", append=True)  # open across the snapshot
        snap = await make_driver().snapshot("/snap2/src", "/snap2/frozen", "sha256")
        await late.write(b"appended by the late writer")
        await late.commit()
        await late.close()
        frozen = await read_all(d, "/snap2/frozen")
        assert frozen == first and snap.size == len(first)
        if snap.hexdigest is not None:
            assert snap.hexdigest == hashlib.sha256(frozen).hexdigest()

    async def test_settled_snapshot_version_is_the_frozen_files(self, driver: Any) -> None:
        """``snapshot(settle=True)``'s version, when given, is the token ``dest`` has (a stat may
        call it unsettled at first) and keeps once settled; on a filesystem it is always given."""
        data = blob(MiB + 5, seed=13)
        await driver.put_content("/snap3/src", data)
        snap = await driver.snapshot("/snap3/src", "/snap3/frozen", "sha256", settle=True)
        assert snap.size == len(data)
        if snap.version is None:
            assert driver.name != "filesystem"
            return
        info = await driver.stat("/snap3/frozen")
        assert snap.version in (info.version, info.unsettled)
        assert await settled_version(driver, "/snap3/frozen") == snap.version

    # -- redirect ------------------------------------------------------------------------------

    async def test_redirect_url(self, driver: Any) -> None:
        data = blob(70_000, seed=3)
        await driver.put_content("/rd/blob", data)
        url = await driver.redirect_url("/rd/blob")
        if url is None:
            return  # the driver does not redirect: callers stream the content themselves
        async with httpx.AsyncClient() as client:
            resp = await client.get(url)
            assert resp.status_code == 200
            assert resp.content == data
            ranged = await client.get(url, headers={"Range": "bytes=10-19"})
            assert ranged.status_code == 206 and ranged.content == data[10:20]
        assert await driver.redirect_url("/rd/blob", method="PUT") is None

