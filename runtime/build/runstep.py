"""One ``RUN`` of a build: a pyreg container on the layers so far, its upper dir kept as the diff.

The container is made by the runtime's own pieces (runtime/container.py: the same namespaces,
cgroup, capabilities, seccomp filter, masked paths and no_new_privs as ``pyreg run``), with two
differences a build needs:

- the overlay is mounted with ``redirect_dir=off,metacopy=off,index=off``, so the upper dir says
  every change in a form a tar can carry (runtime/build/layers.py);
- the mount points the runtime had to create (``/etc/hosts``, ``/etc/hostname``,
  ``/etc/resolv.conf``, ``/proc``, ``/sys``, ``/dev``, the targets of ``--mount``) are removed from
  the upper dir afterwards when the layers below did not have them and the command left them
  empty, as BuildKit removes its mount stubs: a ``RUN`` on ``FROM scratch`` adds no ``/proc``.

Each step runs under a fresh supervisor process (a process can make a pid namespace for its
children only once). If the build is interrupted, :meth:`Step.abort` kills the supervisor (its
PID 1 dies with it: ``PDEATHSIG``), the cgroup is removed and the container's directory too, so
nothing is left mounted, grouped or listed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import threading
from collections.abc import Callable, Iterator

from pyreg.runtime.build.layers import (
    OVERLAY_BUILD_OPTIONS,
    OVERLAY_BUILD_OPTIONS_ROOTLESS,
    is_opaque,
    is_whiteout,
)
from pyreg.runtime.build.records import field, record

STUBS = ("etc/hosts", "etc/hostname", "etc/resolv.conf", "proc", "sys", "dev")


@record
class RunSpec:
    """What to run and on what: argv as the instruction says it (already shell-wrapped)."""

    argv: list[str]
    env: list[str]
    layers: list[str]                          # lower dirs, base first
    user: str = ""
    workdir: str = "/"
    network: str = "default"                   # default | none | host
    mounts: list[tuple[str, str, bool]] = field(default_factory=list)  # (host, target, read-only)


class StepError(Exception):
    """The step could not run (not: the command failed; that is an exit code)."""


def _xattrs(path: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name in ("trusted.overlay.opaque", "user.overlay.opaque", "user.overlay.whiteout",
                 "trusted.overlay.whiteout"):
        with contextlib.suppress(OSError):
            out[name] = os.getxattr(path, name, follow_symlinks=False)
    return out


def lower_stat(layers: list[str], rel: str) -> os.stat_result | None:
    """``rel`` as the overlay of ``layers`` shows it (None: absent), symlinks not followed."""
    parts = [p for p in rel.split("/") if p]
    for layer in reversed(layers):
        path = os.path.join(layer, *parts)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        if st is not None:
            return None if is_whiteout(st, _xattrs(path)) else st
        for i in range(len(parts) - 1, 0, -1):  # hidden here by a whiteout or opaque ancestor?
            anc = os.path.join(layer, *parts[:i])
            try:
                ast = os.lstat(anc)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if not stat.S_ISDIR(ast.st_mode) or is_whiteout(ast, _xattrs(anc)) or is_opaque(_xattrs(anc)):
                return None
            break
    return None


def _stub_plan(layers: list[str], targets: list[str]) -> list[tuple[str, os.stat_result | None]]:
    """For each mount point and each of its parents: (path, what the lowers have there)."""
    plan: dict[str, os.stat_result | None] = {}
    for target in targets:
        parts = [p for p in target.split("/") if p]
        for i in range(len(parts), 0, -1):
            rel = "/".join(parts[:i])
            if rel not in plan:
                plan[rel] = lower_stat(layers, rel)
    return sorted(plan.items(), key=lambda kv: -kv[0].count("/"))


def remove_stubs(upper: str, plan: list[tuple[str, os.stat_result | None]]) -> None:
    """Deepest first: a stub the command left empty goes; a parent only copied up for it too."""
    for rel, before in plan:
        path = os.path.join(upper, rel)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        xattrs = _xattrs(path)
        if is_whiteout(st, xattrs) or is_opaque(xattrs):
            continue
        if stat.S_ISDIR(st.st_mode):
            if os.listdir(path):
                continue
            same = before is not None and stat.S_ISDIR(before.st_mode) and (
                before.st_mode, before.st_uid, before.st_gid) == (st.st_mode, st.st_uid, st.st_gid)
            if before is None or same:
                os.rmdir(path)
        elif stat.S_ISREG(st.st_mode) and st.st_size == 0 and before is None:
            os.unlink(path)


class Step:
    """A RUN container: :meth:`run` it, read its ``upper`` dir, then :meth:`remove` it."""

    def __init__(self, spec: RunSpec, scratch_root: str | None = None) -> None:
        """``scratch_root``: where the step's upper and work dirs go (the build cache beside the
        store, on disk) rather than the run root, often a tmpfs: a RUN may write gigabytes."""
        from pyreg.runtime import spec as rspec
        from pyreg.runtime import state
        from pyreg.runtime.record import Container, ContainerConfig

        self.spec = spec
        self.supervisor = 0
        self.empty_lower = ""
        layers = list(spec.layers)
        if not layers:  # FROM scratch: overlay wants a lower dir
            state.ensure_run_root()
            self.empty_lower = os.path.join(state.run_root(), f"build-empty-{os.urandom(8).hex()}")
            os.mkdir(self.empty_lower, 0o755)
            layers = [self.empty_lower]
        self.layers = layers
        defaults = rspec.run_defaults()
        from pyreg.runtime.build.fsops import in_userns

        rootless = os.geteuid() != 0 or in_userns()
        cid = state.new_id()
        network, net = self._network(spec.network, defaults, rootless)
        cfg = ContainerConfig(
            argv=list(spec.argv), env=list(spec.env), workdir=spec.workdir or "/", user=spec.user,
            hostname=cid[:12], network=network, volumes=list(spec.mounts), layers=layers,
            rootless=rootless, pids_default=defaults["pidslimit"],
            memory=None if rootless else defaults["memory"],
            extra={"overlay_options": OVERLAY_BUILD_OPTIONS_ROOTLESS if rootless else OVERLAY_BUILD_OPTIONS,
                   "labels": {}, "build": True},
        )
        self.scratch = ""
        if scratch_root:
            os.makedirs(scratch_root, mode=0o700, exist_ok=True)
            self.scratch = os.path.join(scratch_root, cid[:16])
            os.mkdir(self.scratch, 0o700)
            cfg.extra["scratch_dir"] = self.scratch
        self.rec = Container(id=cid, name=f"build-{cid[:12]}", image="", config=cfg, created=state.now())
        if net:
            self.rec.net = net
        self.plan = _stub_plan(layers, [*STUBS, *(t for _h, t, _ro in spec.mounts)])

    @staticmethod
    def _network(choice: str, defaults: dict[str, object], rootless: bool) -> tuple[str, dict[str, object]]:
        if choice in ("none", "host"):
            return choice, {}
        if choice != "default":
            raise StepError(f"network {choice!r}: default, none or host")
        import argparse

        from pyreg.runtime.commands.run import _network

        ns = argparse.Namespace(network=None, publish=[], publish_all=False, network_alias=[])
        try:
            network, _ports, net = _network(ns, {}, rootless, defaults)
        except ValueError as e:
            raise StepError(str(e)) from None
        return network, net

    @property
    def upper(self) -> str:
        from pyreg.runtime import state

        if self.scratch:
            return os.path.join(self.scratch, "upper")
        return os.path.join(state.container_dir(self.rec.id), "upper")

    def run(self, output: Callable[[bytes], None] | None) -> int:
        """Run the command to its end; its output goes, line by line, to ``output``. Returns the
        exit code (docker's: 125 when pyreg could not start it, 126/127 exec failures)."""
        from pyreg.runtime import container
        from pyreg.runtime.errors import ContainerError

        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the supervisor of this one step
            code = 125
            try:
                os.close(out_r)
                os.close(err_r)
                from pyreg.runtime import linux

                linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # the build died: so do we
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(out_w, 1)
                os.dup2(out_w, 2)
                try:
                    code = container.run(self.rec, detach=False)
                except ContainerError as e:
                    os.write(err_w, json.dumps({"message": str(e), "code": e.code}).encode())
                    code = e.code
            except BaseException as e:
                with contextlib.suppress(BaseException):
                    os.write(err_w, json.dumps({"message": str(e), "code": 125}).encode())
            finally:
                os._exit(code & 0xFF)
        self.supervisor = pid
        os.close(out_w)
        os.close(err_w)
        reader = threading.Thread(target=_relay, args=(out_r, output), daemon=True)
        reader.start()
        _, status = os.waitpid(pid, 0)
        self.supervisor = 0
        reader.join()
        from pyreg.runtime.process import read_to_end

        data = read_to_end(err_r)
        if data:
            msg = json.loads(data)
            raise StepError(str(msg["message"]))
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            code = 128 - code
        remove_stubs(self.upper, self.plan)
        return code

    def abort(self) -> None:
        """The build was interrupted: kill the step, leave nothing behind."""
        with _signals_held():
            if self.supervisor:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.supervisor, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.supervisor, 0)
                self.supervisor = 0
            self.remove()

    def remove(self) -> None:
        """The cgroup (if the supervisor could not remove it) and the container's directory."""
        with _signals_held():
            self._remove()

    def _remove(self) -> None:
        from pyreg.runtime import container, state

        rec = state.load(self.rec.id)
        if rec is not None:
            with contextlib.suppress(Exception):
                container.cleanup(rec, remove=False)
        with contextlib.suppress(FileNotFoundError):
            container.remove_files(self.rec.id)
        if self.scratch:
            _rmtree(self.scratch)
        if self.empty_lower:
            with contextlib.suppress(OSError):
                os.rmdir(self.empty_lower)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C or SIGTERM in the middle of a step's cleanup would leave half of it (a container
    record, a cgroup): they are held until it is done, then delivered."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _relay(fd: int, output: Callable[[bytes], None] | None) -> None:
    buf = b""
    with os.fdopen(fd, "rb", buffering=0) as f:
        while chunk := f.read(65536):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if output is not None:
                for line in lines:
                    output(line)
    if buf and output is not None:
        output(buf)


def _rmtree(path: str) -> None:
    """Remove a step's scratch dir, overlay's mode-000 ``work/work`` included."""
    from pyreg.runtime.container import remove_tree

    remove_tree(path)
