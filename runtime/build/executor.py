"""Walk the stages of a parsed Dockerfile and make the image, step by step, into the local store.

Semantics follow BuildKit where the Dockerfile reference and the legacy builder differ:

- only the stages the target needs are built (its base stages, ``COPY --from`` and
  ``RUN --mount=…,from=`` sources);
- ARG: global ones (before the first ``FROM``) are seen by ``FROM`` lines only; a stage sees an
  ARG once it declares it (``ARG NAME`` takes the global value or ``--build-arg``); the platform
  args (``TARGETPLATFORM``, ``TARGETOS``, ``TARGETARCH``, ``BUILDPLATFORM``, …) are predefined;
  ENV wins over ARG in expansion; ARG values are in every ``RUN``'s environment but not in the
  image;
- ``ENTRYPOINT`` clears a ``CMD`` inherited from the base (not one set earlier in the stage);
- a step that changes no file adds no layer (history ``empty_layer``), as BuildKit's exporter;
- ``COPY`` from the context gives 0:0 unless ``--chown``; ``COPY --from`` keeps owners;
- ``ONBUILD`` triggers of the base run first, then are cleared from the new image.

Every step has a cache key (runtime/build/cache.py): its parent's key and what it depends on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyreg.runtime.build import cache as cache_mod
from pyreg.runtime.build import fsops
from pyreg.runtime.build.context import BuildContext
from pyreg.runtime.build.layers import Layer, commit_layer
from pyreg.runtime.build.records import field, record
from pyreg.storage import mediatypes
from pyreg.storage.localstore import ImageNotFoundError, LocalStore, chain_ids

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HISTORY_COMMENT = "buildkit.dockerfile.v0"
_GLOB = re.compile(r"[*?\[]")


class BuildError(Exception):
    """A build that cannot go on: one line, naming the file, line and instruction where known."""


@record
class BuildOptions:
    context: BuildContext                             # build-front's: the dir and its ignore rules
    dockerfile_text: str
    dockerfile_name: str = "Dockerfile"
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    pull: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    network: str = "default"
    source_date_epoch: int | None = None
    compression: str = "gzip"
    pull_fn: Callable[[str], None] | None = None
    out: Callable[[str], None] = print
    store_root: str | None = None


@record
class BuildResult:
    image_id: str
    manifest_digest: str
    manifest_size: int
    config: dict[str, Any]
    names: list[str]


@record
class State:
    """A stage as built so far."""

    config: dict[str, Any]                  # the image config's "config" object
    layers: list[Layer]
    dirs: list[str]                         # extracted layer dirs, base first
    history: list[dict[str, Any]]
    key: str
    platform: dict[str, str]
    args: dict[str, str | None] = field(default_factory=dict)
    cmd_set: bool = False

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.config.get("Env") or []:
            k, _, v = item.partition("=")
            out[k] = v
        return out

    def set_env(self, k: str, v: str) -> None:
        env = self.env()
        env[k] = v
        self.config["Env"] = [f"{a}={b}" for a, b in env.items()]

    def scope(self) -> dict[str, str]:
        """What expansion sees: declared args that have values, then ENV (which wins)."""
        return {**{k: v for k, v in self.args.items() if v is not None}, **self.env()}

    def shell(self) -> list[str]:
        return list(self.config.get("Shell") or DEFAULT_SHELL)


def _host_platform() -> dict[str, str]:
    from pyreg.storage.graph import Platform

    p = Platform.host()
    out = {"architecture": p.architecture, "os": p.os}
    if p.variant:
        out["variant"] = p.variant
    return out


def check_platform(value: str | None) -> None:
    """``--platform`` / ``FROM --platform``: the host's only (this builder emulates nothing)."""
    if not value:
        return
    p = _host_platform()
    parts = value.split("/")
    host = [p["os"], p["architecture"], *([p["variant"]] if "variant" in p else [])]
    if parts[:2] != host[:2] or (len(parts) > 2 and parts[2:] != host[2:]):
        raise BuildError(f"platform {value!r} is not this host's ({'/'.join(host)}): pyreg build "
                         "runs every step natively and cannot build for another platform")


def _now(epoch: int | None) -> str:
    t = time.time() if epoch is None else epoch
    frac = "" if epoch is not None else f".{int(t % 1 * 1e9):09d}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + frac + "Z"


def expose_ports(words: list[str]) -> list[str]:
    out = []
    for word in words:
        port, _, proto = word.partition("/")
        proto = (proto or "tcp").lower()
        lo, sep, hi = port.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()) or proto not in ("tcp", "udp", "sctp"):
            raise ValueError(f"invalid port {word!r}")
        for n in range(int(lo), int(hi if sep else lo) + 1):
            out.append(f"{n}/{proto}")
    return out


class Builder:
    """One build: parse, walk, commit, tag."""

    def __init__(self, opts: BuildOptions) -> None:
        from pyreg.runtime.api import extract_layer

        self.opts = opts
        self.store = LocalStore(opts.store_root) if opts.store_root else LocalStore()
        self.extractor = extract_layer
        self.cache = cache_mod.BuildCache(self.store.root, enabled=not opts.no_cache)
        self.step_no = 0
        self.stage_states: dict[int, State] = {}
        self.work = ""
        self.mounts: fsops.Mounts | None = None
        self.global_scope: dict[str, str] = {}
        self.escape = "\\"
        self.df: Any = None
        self.plan: Any = None
        self.author = ""

    # -------------------------------------------------------------------------- entry

    def build(self) -> BuildResult:
        from pyreg.runtime.build.dockerfile import DockerfileError, parse

        try:
            df = parse(self.opts.dockerfile_text, self.opts.dockerfile_name)
        except DockerfileError as e:
            raise BuildError(str(e)) from None
        for w in getattr(df, "warnings", []) or []:
            self.opts.out(f"WARNING: {w}")
        if "syntax" in (df.directives or {}):
            self.opts.out(f"NOTE: '# syntax={df.directives['syntax']}' ignored: "
                          "pyreg build has its own frontend")
        os.umask(0o022)
        if not fsops.private_mounts((str(self.store.root),)):
            raise BuildError("pyreg build needs a private mount namespace: as root, or rootless in an "
                             "unprivileged user namespace, which this system refuses")
        self.work = tempfile.mkdtemp(prefix="pyreg-build-")
        self.mounts = fsops.Mounts(self.work)
        try:
            with self.store.writing(), cache_mod.in_use(self.store.root):
                ctx = self.opts.context
                if ctx.persistent:  # a directory: remember its files' digests for the next build
                    from pyreg.runtime.build import hashcache

                    ctx.hashes = hashcache.for_context(self.cache.root, ctx.root,
                                                       trust=not self.opts.no_cache)
                try:
                    return self._build(df)
                finally:
                    ctx.hashes.save()
        finally:
            self.mounts.close()
            shutil.rmtree(self.work, ignore_errors=True)

    def _build(self, df: Any) -> BuildResult:
        """The stages the target needs, in the order build-front's plan (runtime/build/stages.py)
        gives: bases, ``--from`` and ``--mount=…,from=`` sources first."""
        from pyreg.runtime.build import stages as plan_mod
        from pyreg.runtime.build.dockerfile import DockerfileError

        self.df = df
        self.escape = df.escape
        try:
            plan = plan_mod.plan(df, self.opts.build_args, self.opts.target)
        except DockerfileError as e:
            raise BuildError(str(e)) from None
        self.plan = plan
        self.global_scope = dict(plan.global_scope)
        for i in plan.order:
            self.stage_states[i] = self._stage(plan.stages[i], len(plan.order))
        if plan.unused_build_args:
            self.opts.out(f"WARNING: one or more build-args {plan.unused_build_args} were not consumed")
        return self._commit_image(self.stage_states[plan.target])

    # -------------------------------------------------------------------------- stages

    def _expand(self, ins: Any, word: str, scope: dict[str, str]) -> str:
        from pyreg.runtime.build.expand import ExpandError, expand

        try:
            return expand(word, scope, self.escape)
        except ExpandError as e:
            raise BuildError(str(ins.error(str(e)))) from None

    def _stage(self, resolved: Any, count: int) -> State:
        stage = resolved.stage
        total = len(stage.instructions) + 1
        label = stage.name or f"stage-{stage.index}"
        prefix = f"{label} " if count > 1 else ""
        base = resolved.base
        try:
            check_platform(resolved.platform)
        except BuildError as e:
            raise BuildError(str(stage.source.error(str(e)))) from None
        n = self._next_step(f"[{prefix}1/{total}] FROM {base}" + (f" AS {stage.name}" if stage.name else ""))
        if resolved.base_stage is not None:
            src = self.stage_states[resolved.base_stage]
            state = State(json.loads(json.dumps(src.config)), list(src.layers), list(src.dirs),
                          [dict(h) for h in src.history], src.key, dict(src.platform))
        elif resolved.is_scratch:  # BuildKit's empty image: WorkingDir / and the default PATH
            state = State({"Env": [DEFAULT_PATH], "WorkingDir": "/"}, [], [], [], cache_mod.key("scratch"),
                          _host_platform())
        else:
            state = self._image_state(stage.source, base)
        state.args = {}
        state.cmd_set = False
        self.opts.out(f"#{n} DONE")
        triggers = list(state.config.pop("OnBuild", None) or [])
        if triggers:
            self._onbuild(stage, triggers, state, prefix)
        for i, ins in enumerate(stage.instructions, 2):
            self._dispatch(ins, state, f"[{prefix}{i}/{total}]")
        return state

    def _image_state(self, ins: Any, ref: str) -> State:
        if self.opts.pull and self.opts.pull_fn is not None:
            self.opts.pull_fn(ref)
        try:
            img = self.store.resolve(ref, extractor=self.extractor)
        except ImageNotFoundError:
            if self.opts.pull_fn is None:
                raise BuildError(str(ins.error(f"image {ref} is not in the local store"))) from None
            try:
                self.opts.pull_fn(ref)
                img = self.store.resolve(ref, extractor=self.extractor)
            except (LookupError, ImageNotFoundError) as e:
                raise BuildError(str(ins.error(f"{ref}: {e}"))) from None
        cfg = img.config
        diff_ids = list((cfg.get("rootfs") or {}).get("diff_ids") or [])
        layers = []
        for desc, diff_id in zip(img.layers, diff_ids, strict=False):
            layers.append(Layer(diff_id, str(desc.digest), desc.size, desc.media_type))
        platform = {"architecture": cfg.get("architecture") or _host_platform()["architecture"],
                    "os": cfg.get("os") or "linux"}
        if cfg.get("variant"):
            platform["variant"] = cfg["variant"]
        host = _host_platform()
        if platform["architecture"] != host["architecture"]:
            raise BuildError(str(ins.error(f"{ref} is for {platform['architecture']}, not this host's "
                                           f"{host['architecture']}")))
        return State(json.loads(json.dumps(cfg.get("config") or {})), layers,
                     [str(p) for p in img.layer_dirs], list(cfg.get("history") or []),
                     cache_mod.key("image", str(img.manifest_digest)), platform)

    def _onbuild(self, stage: Any, triggers: list[str], state: State, prefix: str) -> None:
        from pyreg.runtime.build.dockerfile import DockerfileError, parse

        for text in triggers:
            try:
                parsed = parse(f"FROM scratch\n{text}\n", f"ONBUILD of {stage.base}")
            except DockerfileError as e:
                raise BuildError(str(e)) from None
            for ins in parsed.stages[0].instructions:
                self._dispatch(ins, state, f"[{prefix}ONBUILD]")

    def _next_step(self, title: str) -> int:
        self.step_no += 1
        self.opts.out(f"#{self.step_no} {title}")
        return self.step_no

    # -------------------------------------------------------------------------- instructions

    def _dispatch(self, ins: Any, state: State, where: str) -> None:
        kw = ins.keyword
        title = " ".join(ins.original.split()) if kw != "RUN" else ins.original.strip().splitlines()[0]
        n = self._next_step(f"{where} {title}")
        start = time.monotonic()
        handler = getattr(self, f"_do_{kw.lower()}", None)
        if handler is None:
            raise BuildError(str(ins.error("not supported")))
        try:
            cached = handler(ins, state, n)
        except BuildError:
            raise
        except (ValueError, OSError) as e:
            msg = e.strerror if isinstance(e, OSError) and e.strerror and not str(e) else str(e)
            raise BuildError(str(ins.error(msg))) from None
        self.opts.out(f"#{n} CACHED" if cached else f"#{n} DONE {time.monotonic() - start:.1f}s")

    def _history(self, state: State, created_by: str, empty: bool, created: str | None = None) -> None:
        """A history entry. A step that makes no layer takes the time of the entry before it (as
        BuildKit), so a fully cached rebuild makes the very same config, hence the same image ID."""
        if created is None and self.opts.source_date_epoch is None and state.history:
            created = state.history[-1].get("created")
        entry: dict[str, Any] = {"created": created or _now(self.opts.source_date_epoch),
                                 "created_by": created_by, "comment": HISTORY_COMMENT}
        if empty:
            entry["empty_layer"] = True
        state.history.append(entry)

    def _meta_step(self, state: State, ins: Any, created_by: str, *parts: Any) -> bool:
        state.key = cache_mod.key(state.key, ins.keyword, *parts)
        self._history(state, created_by, True)
        return False

    def _do_env(self, ins: Any, state: State, n: int) -> bool:
        pairs = []
        for k, v in ins.pairs():
            key = self._expand(ins, k, state.scope())
            value = self._expand(ins, v, state.scope())
            state.set_env(key, value)
            pairs.append(f"{key}={value}")
        return self._meta_step(state, ins, "ENV " + " ".join(pairs), pairs)

    def _do_arg(self, ins: Any, state: State, n: int) -> bool:
        shown = []
        for decl in ins.arg_decls():
            if decl.name in self.opts.build_args:
                value: str | None = self.opts.build_args[decl.name]
            elif decl.default is not None:
                value = self._expand(ins, decl.default, state.scope())
            else:  # a global ARG's value, or an automatic platform arg
                value = self.global_scope.get(decl.name)
            state.args[decl.name] = value
            shown.append(decl.name if decl.default is None else f"{decl.name}={decl.default}")
        return self._meta_step(state, ins, "ARG " + " ".join(shown),
                               {k: v for k, v in state.args.items()})

    def _do_label(self, ins: Any, state: State, n: int) -> bool:
        labels = dict(state.config.get("Labels") or {})
        shown = []
        for k, v in ins.pairs():
            key, value = self._expand(ins, k, state.scope()), self._expand(ins, v, state.scope())
            labels[key] = value
            shown.append(f"{key}={value}")
        state.config["Labels"] = labels
        return self._meta_step(state, ins, "LABEL " + " ".join(shown), shown)

    def _do_maintainer(self, ins: Any, state: State, n: int) -> bool:
        state.config.setdefault("Labels", {})
        self.author = ins.args[0] if ins.args else ""
        return self._meta_step(state, ins, f"MAINTAINER {self.author}", self.author)

    def _do_user(self, ins: Any, state: State, n: int) -> bool:
        user = self._expand(ins, ins.args[0], state.scope())
        state.config["User"] = user
        return self._meta_step(state, ins, f"USER {user}", user)

    def _do_stopsignal(self, ins: Any, state: State, n: int) -> bool:
        sig = self._expand(ins, ins.args[0], state.scope())
        state.config["StopSignal"] = sig
        return self._meta_step(state, ins, f"STOPSIGNAL {sig}", sig)

    def _do_expose(self, ins: Any, state: State, n: int) -> bool:
        from pyreg.runtime.build.expand import expand_words

        words = [w for a in ins.args for w in expand_words(a, state.scope(), self.escape)]
        ports = dict(state.config.get("ExposedPorts") or {})
        for p in expose_ports(words):
            ports[p] = {}
        state.config["ExposedPorts"] = ports
        shown = " ".join(f"{p}:{{}}" for p in sorted(ports))
        return self._meta_step(state, ins, f"EXPOSE map[{shown}]", sorted(ports))

    def _do_volume(self, ins: Any, state: State, n: int) -> bool:
        vols = dict(state.config.get("Volumes") or {})
        paths = [self._expand(ins, a, state.scope()) for a in ins.args]
        for p in paths:
            if not p:
                raise ValueError("VOLUME specified can not be an empty string")
            vols[p] = {}
        state.config["Volumes"] = vols
        return self._meta_step(state, ins, f"VOLUME {json.dumps(paths)}", paths)

    def _command(self, ins: Any, state: State) -> list[str]:
        if ins.exec_form:
            return list(ins.args)
        return [*state.shell(), ins.args[0] if ins.args else ""]

    def _do_cmd(self, ins: Any, state: State, n: int) -> bool:
        cmd = self._command(ins, state)
        state.config["Cmd"] = cmd
        state.cmd_set = True
        return self._meta_step(state, ins, f"CMD {json.dumps(cmd)}", cmd)

    def _do_entrypoint(self, ins: Any, state: State, n: int) -> bool:
        ep = self._command(ins, state) if ins.args else []
        state.config["Entrypoint"] = ep or None
        if not state.cmd_set:
            state.config.pop("Cmd", None)
        return self._meta_step(state, ins, f"ENTRYPOINT {json.dumps(ep)}", ep, state.cmd_set)

    def _do_shell(self, ins: Any, state: State, n: int) -> bool:
        if not ins.exec_form or not ins.args:
            raise ValueError("SHELL requires the arguments to be in JSON form")
        state.config["Shell"] = list(ins.args)
        return self._meta_step(state, ins, f"SHELL {json.dumps(ins.args)}", ins.args)

    def _do_onbuild(self, ins: Any, state: State, n: int) -> bool:
        text = ins.onbuild_expression()
        state.config["OnBuild"] = [*(state.config.get("OnBuild") or []), text]
        return self._meta_step(state, ins, f"ONBUILD {text}", text)

    def _do_healthcheck(self, ins: Any, state: State, n: int) -> bool:
        hc = ins.healthcheck()
        state.config["Healthcheck"] = hc
        return self._meta_step(state, ins, "HEALTHCHECK " + json.dumps(hc), hc)

    # -- steps that change files --------------------------------------------------------------

    def _cached_layer(self, state: State, key: str, created_by: str) -> bool:
        """Apply a cache hit for ``key`` to ``state``; False on a miss."""
        entry = self.cache.get(key)
        if entry is None:
            return False
        layer = entry.get("layer")
        if layer is not None:
            if not self.store.has_blob(layer["digest"]):
                return False
            self._add_layer(state, Layer(**layer))
        state.key = key
        self._history(state, created_by, layer is None, entry.get("created"))
        return True

    def _add_layer(self, state: State, layer: Layer) -> None:
        from pyreg.storage.digest import Digest
        from pyreg.storage.manifest import Descriptor

        chain = chain_ids([*(lay.diff_id for lay in state.layers), layer.diff_id])[-1]
        desc = Descriptor(layer.media_type, Digest.parse(layer.digest), layer.size)
        path = self.store.ensure_layer(desc, layer.diff_id, chain, self.extractor)
        state.layers.append(layer)
        state.dirs.append(str(path))

    def _finish_layer(self, state: State, key: str, upper: str, created_by: str) -> None:
        layer = None
        if os.listdir(upper):
            layer = commit_layer(upper, self.store, source_date_epoch=self.opts.source_date_epoch,
                                 compression=self.opts.compression)
            self._add_layer(state, layer)
        created = _now(self.opts.source_date_epoch)
        self.cache.put(key, {"layer": layer.__dict__ if layer else None, "created": created})
        state.key = key
        self._history(state, created_by, layer is None, created)

    def _workdir_path(self, state: State, path: str) -> str:
        if not path.startswith("/"):
            path = os.path.join(state.config.get("WorkingDir") or "/", path)
        return os.path.normpath(path) if path != "/" else "/"

    def _do_workdir(self, ins: Any, state: State, n: int) -> bool:
        assert self.mounts is not None
        path = self._workdir_path(state, self._expand(ins, ins.args[0], state.scope()))
        state.config["WorkingDir"] = path
        key = cache_mod.key(state.key, "WORKDIR", path, state.config.get("User") or "")
        created_by = f"WORKDIR {path}"
        if self._cached_layer(state, key, created_by):
            return True
        if fsops.is_dir_in(self.mounts.view(state.dirs), path):
            state.key = key
            self._history(state, created_by, True)
            self.cache.put(key, {"layer": None, "created": state.history[-1]["created"]})
            return False
        user = state.config.get("User") or ""
        owner = fsops.lookup_ids(self.mounts.view(state.dirs), user) if user else None
        with self.mounts.writable(state.dirs) as (merged, upper):
            fsops.mkdir_in(merged, path, owner)
        self._finish_layer(state, key, upper, created_by)
        shutil.rmtree(os.path.dirname(upper), ignore_errors=True)
        return False

    def _do_run(self, ins: Any, state: State, n: int) -> bool:
        argv, script = self._run_argv(ins, state)
        env = {**{k: v for k, v in state.args.items() if v is not None}, **state.env()}
        if "PATH" not in env:
            env["PATH"] = DEFAULT_PATH.partition("=")[2]
        network = ins.flag("network") or self.opts.network
        if network not in ("default", "none", "host"):
            raise ValueError(f"--network={network}: default, none or host")
        if ins.flag("security"):
            raise ValueError("--security is not supported (no insecure builds)")
        mounts, mount_keys = self._run_mounts(ins, state)
        if script is not None:
            path = os.path.join(self.work, f"pipe-{os.urandom(6).hex()}")
            with open(path, "w") as f:
                f.write(script[1])
            os.chmod(path, 0o755)
            mounts.append((path, f"/dev/pipes/{script[0]}", True))
            mount_keys.append(["script", script])
        key = cache_mod.key(state.key, "RUN", argv, sorted(env.items()), state.config.get("User") or "",
                            state.config.get("WorkingDir") or "/", network, mount_keys)
        args = [f"{k}={v}" for k, v in state.args.items() if v is not None]
        shown_args = f"|{len(args)} {' '.join(args)} " if args else ""  # BuildKit: the args a RUN saw
        created_by = "RUN " + shown_args + " ".join(argv) + " # buildkit"
        if self._cached_layer(state, key, created_by):
            return True
        from pyreg.runtime.build.runstep import RunSpec, Step, StepError  # a cached rebuild needs none

        spec = RunSpec(argv=argv, env=[f"{k}={v}" for k, v in env.items()], layers=list(state.dirs),
                       user=state.config.get("User") or "", workdir=state.config.get("WorkingDir") or "/",
                       network=network, mounts=mounts)
        try:
            step = Step(spec, str(self.cache.root / "steps"))
        except StepError as e:
            raise ValueError(str(e)) from None
        try:
            code = step.run(lambda line: self.opts.out(f"#{n} {line.decode(errors='replace')}"))
            if code != 0:
                raise BuildError(str(ins.error(f"process {json.dumps(' '.join(argv))} did not complete "
                                               f"successfully: exit code: {code}")))
            self._finish_layer(state, key, step.upper, created_by)
        except StepError as e:
            raise BuildError(str(ins.error(str(e)))) from None
        except BaseException:
            step.abort()
            raise
        step.remove()
        return False

    def _run_argv(self, ins: Any, state: State) -> tuple[list[str], tuple[str, str] | None]:
        """argv, and a heredoc script to put at /dev/pipes/NAME (``RUN <<EOF`` with a ``#!`` body),
        as build-front's ``Instruction.run_script`` says BuildKit does it."""
        run = ins.run_script()
        script = (run.script.name, run.script.body) if run.script is not None else None
        if ins.exec_form:
            return list(run.command), script
        if script is not None:
            return list(run.command), script
        return [*state.shell(), run.command[0] if run.command else ""], script

    def _run_mounts(self, ins: Any, state: State) -> tuple[list[tuple[str, str, bool]], list[Any]]:
        from pyreg.runtime.build.stages import parse_mount

        assert self.mounts is not None
        out: list[tuple[str, str, bool]] = []
        keys: list[Any] = []
        for raw in ins.flag_values("mount"):
            f = parse_mount(self._expand(ins, raw, state.scope()))
            kind = f.get("type", "bind")
            target = f.get("target") or f.get("dst") or f.get("destination")
            if not target:
                raise ValueError(f"--mount {raw!r}: a target is needed")
            target = self._workdir_path(state, target)
            readonly = f.get("ro", f.get("readonly")) in ("", "true")
            if kind == "cache":
                ident = f.get("id") or target
                try:
                    mode = int(f.get("mode") or "755", 8)
                    uid, gid = int(f.get("uid") or 0), int(f.get("gid") or 0)
                except ValueError:
                    raise ValueError(f"--mount {raw!r}: mode is octal, uid and gid numbers") from None
                path = self.cache.mount_dir(ident, mode, uid, gid)
                out.append((str(path), target, readonly))
                keys.append(["cache", target, readonly])
            elif kind == "bind":
                src = f.get("source") or f.get("src") or "/"
                rw = f.get("rw", f.get("readwrite")) in ("", "true")
                if f.get("from"):
                    other = self._from_state(ins, f["from"])
                    root, key = self.mounts.view(other.dirs), other.key
                    host = _resolve_in(root, src)
                else:
                    ctx = self.opts.context
                    key = ctx.checksum(ctx.sources(src))
                    host = str(ctx.resolve(src))
                if rw:  # writes are thrown away: give the step a copy
                    copy = tempfile.mkdtemp(prefix="bind-", dir=self.work)
                    if os.path.isdir(host):
                        shutil.copytree(host, copy, symlinks=True, dirs_exist_ok=True)
                    else:
                        copy = os.path.join(copy, "file")
                        shutil.copy2(host, copy)
                    host = copy
                out.append((host, target, not rw))
                keys.append(["bind", target, src, key, rw])
            else:
                raise ValueError(f"--mount type={kind} is not supported (bind and cache are)")
        return out, keys

    # -- COPY / ADD ---------------------------------------------------------------------------

    def _from_state(self, ins: Any, word: str) -> State:
        """``--from``: a stage (by name or index; built already, the plan saw to that) or an image."""
        from pyreg.runtime.build import stages as plan_mod
        from pyreg.runtime.build.dockerfile import DockerfileError

        try:
            idx = plan_mod.find_stage(self.df, word)
        except DockerfileError as e:
            raise BuildError(str(ins.error(e.message))) from None
        if idx is not None:
            if idx not in self.stage_states:
                raise BuildError(str(ins.error(f"stage {word!r} is not built before this one")))
            return self.stage_states[idx]
        return self._image_state(ins, word)

    def _do_copy(self, ins: Any, state: State, n: int) -> bool:
        return self._copy(ins, state, add=False)

    def _do_add(self, ins: Any, state: State, n: int) -> bool:
        return self._copy(ins, state, add=True)

    def _copy(self, ins: Any, state: State, add: bool) -> bool:
        from pyreg.runtime.build.expand import expand_heredoc

        assert self.mounts is not None
        scope = state.scope()
        for flag in ("parents", "exclude", "checksum", "keep-git-dir", "unpack"):
            if ins.flag(flag) is not None:
                raise ValueError(f"--{flag} is not supported by pyreg build")
        words, dest_word = ins.sources_dest()
        if not words:
            raise ValueError(f"{ins.keyword} requires at least two arguments")
        dest = self._expand(ins, dest_word, scope)
        as_dir = dest.endswith("/") or dest in (".", "..") or dest.endswith(("/.", "/.."))
        dest = self._workdir_path(state, dest)
        chown = self._expand(ins, ins.flag("chown") or "", scope)
        chmod = self._expand(ins, ins.flag("chmod") or "", scope)
        mode = None
        if chmod:
            if not re.fullmatch(r"[0-7]{1,4}", chmod):
                raise ValueError(f"invalid --chmod={chmod}: an octal mode is needed")
            mode = int(chmod, 8)
        link = ins.bool_flag("link")
        from_word = self._expand(ins, ins.flag("from") or "", scope) if ins.flag("from") else ""
        heredocs: list[tuple[str, str]] = []
        sources: list[str] = []
        for w in words:
            doc = ins.heredoc_for(w)
            if doc is not None:
                body = expand_heredoc(doc.body, scope) if doc.expand else doc.body
                heredocs.append((doc.name, body))
                continue
            src = self._expand(ins, w, scope)
            if re.match(r"^[a-z][a-z0-9+.-]*://", src) or src.startswith("git@"):
                if not add:
                    raise ValueError(f"source can't be a URL for COPY: {src}")
                raise ValueError(f"ADD {src}: fetching URLs is not supported (pyreg build works offline); "
                                 "download it beforehand and COPY the file, or fetch it in a RUN step")
            sources.append(src)
        matched: list[tuple[str, str]] = []  # (host path, source-relative path)
        skip: Callable[[str, bool], bool] | None = None
        if from_word:
            other = self._from_state(ins, from_word)
            root, root_key = self.mounts.view(other.dirs), other.key
            for src in sources:
                found = _match(root, src)
                if not found:
                    raise ValueError(f"failed to compute cache key: \"{'/' + src.lstrip('/')}\": not found")
                matched.extend(found)
            keep_owner = True
        else:
            ctx = self.opts.context
            root_key = "context"
            for src in sources:
                matched.extend((str(ctx.resolve(rel)), rel) for rel in ctx.sources(src))
            keep_owner = False

            def skip(rel: str, is_dir: bool) -> bool:
                if not ctx.is_ignored(rel):
                    return False
                return not (is_dir and ctx.ignore.may_include_under(rel))

        if len(matched) + len(heredocs) > 1 and not as_dir:
            raise ValueError(f"When using {ins.keyword} with more than one source file, the destination "
                             "must be a directory and end with a /")
        checksum = self.opts.context.checksum([r for _, r in matched]) if not from_word else root_key
        key = cache_mod.key(state.key, ins.keyword, [r for _, r in matched], heredocs, dest, as_dir, chown,
                            chmod, link, root_key if from_word else "", checksum)
        created_by = f"{ins.keyword} {' '.join(words)} {dest_word} # buildkit".replace("  ", " ")
        if self._cached_layer(state, key, created_by):
            return True
        lowers = [] if link else state.dirs
        view = self.mounts.view(state.dirs)
        owner = fsops.Owner(None if keep_owner else 0, None if keep_owner else 0, mode)
        if chown:
            owner.uid, owner.gid = fsops.lookup_ids(view, chown)
        with self.mounts.writable(lowers) as (merged, upper):
            dest_is_dir = as_dir or fsops.is_dir_in(view, dest)
            copier = fsops.Copier(merged, owner, skip)
            try:
                for host, rel in matched:
                    st = os.stat(host)
                    if stat.S_ISDIR(st.st_mode):
                        copier.copy(host, dest, rel)
                    elif add and not from_word and _is_archive(host):
                        self._add_archive(copier, host, dest)
                    else:
                        name = os.path.basename(rel.rstrip("/"))
                        copier.copy(host, os.path.join(dest, name) if dest_is_dir else dest, rel)
                for name, body in heredocs:
                    tmp = os.path.join(self.work, f"heredoc-{os.urandom(6).hex()}")
                    with open(tmp, "w") as f:
                        f.write(body)
                    os.chmod(tmp, 0o644)
                    os.utime(tmp, (self.opts.source_date_epoch or 0,) * 2)
                    copier.copy(tmp, os.path.join(dest, name) if dest_is_dir else dest)
                    os.unlink(tmp)
            finally:
                copier.close()
        self._finish_layer(state, key, upper, created_by)
        shutil.rmtree(os.path.dirname(upper), ignore_errors=True)
        return False

    def _add_archive(self, copier: fsops.Copier, host: str, dest: str) -> None:
        """ADD of a local tar (plain, gzip, bzip2, xz): its contents go into ``dest``. Extracted
        first into a scratch dir with tarfile's ``tar`` filter (no absolute names, nothing
        outside), then copied in by the fd-safe copier; owners and modes as the archive says."""
        import tarfile

        tmp = tempfile.mkdtemp(prefix="add-", dir=self.work)
        with tarfile.open(host, "r:*") as tar:
            tar.extractall(tmp, filter="tar")
        saved = copier.owner
        if saved.uid == 0 and saved.gid == 0 and saved.mode is None:
            copier.owner = fsops.Owner(None, None, None)
        try:
            copier.copy(tmp, dest)
        finally:
            copier.owner = saved
            shutil.rmtree(tmp, ignore_errors=True)

    # -------------------------------------------------------------------------- the image

    def _commit_image(self, state: State) -> BuildResult:
        cfg = dict(state.config)
        if self.opts.labels:
            cfg["Labels"] = {**(cfg.get("Labels") or {}), **self.opts.labels}
        for k in ("Labels", "ExposedPorts", "Volumes", "OnBuild"):
            if k in cfg and not cfg[k]:
                del cfg[k]
        if cfg.get("Entrypoint") is None:
            cfg.pop("Entrypoint", None)
        created = _now(self.opts.source_date_epoch)
        if self.opts.source_date_epoch is None and state.history:
            created = state.history[-1].get("created") or created
        doc: dict[str, Any] = {
            "created": created,
            "architecture": state.platform["architecture"],
            "os": state.platform.get("os", "linux"),
        }
        if state.platform.get("variant"):
            doc["variant"] = state.platform["variant"]
        if self.author:
            doc["author"] = self.author
        doc["config"] = cfg
        doc["rootfs"] = {"type": "layers", "diff_ids": [lay.diff_id for lay in state.layers]}
        doc["history"] = state.history
        config_bytes = json.dumps(doc, separators=(",", ":")).encode()
        from pyreg.storage.digest import Digest

        config_digest = Digest.of(config_bytes)
        if not self.store.has_blob(config_digest):
            self.store.put_blob(config_bytes, config_digest)
        manifest = {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": str(config_digest),
                       "size": len(config_bytes)},
            "layers": [lay.descriptor() for lay in state.layers],
        }
        manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
        manifest_digest = Digest.of(manifest_bytes)
        if not self.store.has_blob(manifest_digest):
            self.store.put_blob(manifest_bytes, manifest_digest)
        names = []
        from pyreg.storage.reference import ReferenceError, parse

        for tag in self.opts.tags:
            try:
                name = str(parse(tag))
            except (ReferenceError, ValueError) as e:
                raise BuildError(f"invalid tag {tag!r}: {e}") from None
            if not any(r.name == name and r.digest == manifest_digest for r in self.store.images()):
                self.store.tag(name, manifest_digest, mediatypes.OCI_MANIFEST, len(manifest_bytes),
                               platform=dict(state.platform))  # (a cached rebuild rewrites nothing)
            names.append(name)
        if not names:  # kept as docker keeps it: <none>:<none>, runnable by ID until pruned
            self.store.tag(str(manifest_digest), manifest_digest, mediatypes.OCI_MANIFEST,
                           len(manifest_bytes), platform=dict(state.platform))
        return BuildResult(str(config_digest), str(manifest_digest), len(manifest_bytes), doc, names)


# ------------------------------------------------------------------------------ helpers


def _resolve_in(root: str, path: str) -> str:
    """The host path of ``path`` resolved inside ``root`` (symlinks stop at it)."""
    from pyreg.runtime import rootfs

    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = rootfs.resolve(rootfd, path)
    except FileNotFoundError:
        raise ValueError(f"\"{'/' + path.lstrip('/')}\": not found") from None
    finally:
        os.close(rootfd)
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _match(root: str, pattern: str) -> list[tuple[str, str]]:
    """``COPY --from`` source ``pattern`` (fnmatch per component) in a stage's tree ``root`` ->
    (host path, relative path), sorted; ``..`` and symlinks cannot leave the root."""
    import fnmatch

    norm = os.path.normpath("/" + pattern).lstrip("/")
    if not norm or norm == ".":
        return [(root, "")]
    parts = norm.split("/")
    if not any(_GLOB.search(p) for p in parts):
        try:
            return [(_resolve_in(root, norm), norm)]
        except ValueError:
            return []
    found = [""]
    for part in parts:
        nxt: list[str] = []
        for rel in found:
            base = _resolve_in(root, rel) if rel else root
            if not os.path.isdir(base):
                continue
            if _GLOB.search(part):
                pat = part.replace("[^", "[!")
                names = sorted(n for n in os.listdir(base) if fnmatch.fnmatchcase(n, pat))
            else:
                names = [part] if os.path.lexists(os.path.join(base, part)) else []
            nxt.extend(f"{rel}/{n}" if rel else n for n in names)
        found = nxt
    return [(_resolve_in(root, r), r) for r in found]


def _is_archive(path: str) -> bool:
    import tarfile

    if not os.path.isfile(path):
        return False
    try:
        with tarfile.open(path, "r:*") as tar:
            tar.next()
        return True
    except (tarfile.TarError, OSError, EOFError):
        return False


def load_dockerfile(context: str, name: str | None) -> tuple[str, str]:
    """The Dockerfile's text and the name errors call it by."""
    path = Path(name) if name else Path(context) / "Dockerfile"
    if name and not path.is_absolute() and not path.exists():
        path = Path(context) / name
    try:
        return path.read_text(), str(name or "Dockerfile")
    except FileNotFoundError:
        raise BuildError(f"cannot read the Dockerfile: {path}: no such file") from None

