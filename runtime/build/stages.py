"""The stage graph of a Dockerfile: what each ``FROM`` names, what ``--from`` points at, what to build.

BuildKit's rules (dockerfile2llb):
- global ``ARG`` s (before the first ``FROM``) form the scope in which ``FROM`` base names and
  ``--platform`` values are expanded; ``--build-arg`` overrides their defaults; the automatic platform
  args (``TARGETPLATFORM``, ``BUILDPLATFORM``, …) are in that scope too;
- a base name equal (case-insensitively) to another stage's name is that stage, else an image
  (``scratch`` is the empty image); ``COPY --from`` and ``RUN --mount=from=`` take a stage name, a
  stage index, or an image;
- only the stages the target (``--target``, default the last stage) depends on are built; a cycle is an
  error.
"""

from __future__ import annotations

from pyreg.runtime.build.dockerfile import Dockerfile, DockerfileError, Instruction, Location, Stage
from pyreg.runtime.build.expand import ExpandError, expand
from pyreg.runtime.build.records import field, record
from pyreg.storage.graph import Platform

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

# Build args that docker accepts without an ARG (proxy settings; not persisted in history).
PREDEFINED_ARGS = frozenset({"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
                             "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"})


def platform_args(target: Platform | None = None, build: Platform | None = None) -> dict[str, str]:
    """The automatic platform ARGs (Dockerfile reference, "Automatic platform ARGs in the global scope")."""
    build = build or Platform.host()
    target = target or build
    out: dict[str, str] = {}
    for prefix, p in (("BUILD", build), ("TARGET", target)):
        out[prefix + "PLATFORM"] = str(p)
        out[prefix + "OS"] = p.os
        out[prefix + "ARCH"] = p.architecture
        out[prefix + "VARIANT"] = p.variant or ""
    return out


def check_platform(text: str) -> Platform:
    """``--platform`` as given: only the host's own platform can be built (no emulation)."""
    try:
        wanted = Platform.parse(text)
    except ValueError as e:
        raise DockerfileError(str(e)) from None
    host = Platform.host()
    same_variant = wanted.variant in (None, host.variant) or (
        wanted.architecture == "arm64" and wanted.variant == "v8")
    if wanted.os != host.os or wanted.architecture != host.architecture or not same_variant:
        raise DockerfileError(f"platform {text} cannot be built on this {host} host (no emulation)")
    return host


@record
class ResolvedStage:
    """A stage with its base resolved: another stage (``base_stage``) or an image reference."""

    stage: Stage
    base: str  # expanded base name ("scratch", an image reference, or a stage name)
    base_stage: int | None
    platform: str | None  # expanded --platform value, if any
    deps: set[int] = field(default_factory=set)  # stage indexes this one reads from

    @property
    def is_scratch(self) -> bool:
        return self.base_stage is None and self.base.lower() == "scratch"


@record
class BuildPlan:
    """What to build, in order, and the global scope the executor starts each stage's ARG lookup from."""

    stages: list[ResolvedStage]  # every stage of the file, by index
    order: list[int]  # indexes of the stages to build, dependencies first, target last
    target: int
    global_scope: dict[str, str]  # global ARG values (defaults expanded, --build-arg applied)
    build_args: dict[str, str]
    platform_args: dict[str, str]
    unused_build_args: list[str]


def global_scope(df: Dockerfile, build_args: Mapping[str, str], auto: Mapping[str, str]) -> dict[str, str]:
    """Global ARG values in order: --build-arg wins over the default; defaults see earlier ones."""
    scope: dict[str, str] = dict(auto)
    declared: dict[str, str] = {}
    for ins in df.global_args:
        for decl in ins.arg_decls():
            name = _expand(decl.name, scope, ins, df.escape)
            if name in build_args:
                value: str | None = build_args[name]
            elif decl.default is not None:
                value = _expand(decl.default, scope, ins, df.escape)
            else:
                value = auto.get(name)
            if value is not None:
                scope[name] = value
                declared[name] = value
    # Only declared globals (and the automatic platform args) are visible to FROM.
    return {**dict(auto), **declared}


def find_stage(df: Dockerfile, ref: str) -> int | None:
    """The stage ``ref`` names (case-insensitive name, or a decimal index), else None (an image)."""
    low = ref.lower()
    for st in df.stages:
        if st.name == low:
            return st.index
    if ref.isdigit():
        i = int(ref)
        if i >= len(df.stages):
            raise DockerfileError(f"invalid stage index {i}")
        return i
    return None


def parse_mount(value: str) -> dict[str, str]:
    """A ``RUN --mount`` value: CSV of ``key=value`` (a bare key means ``key=true``), keys lower-cased."""
    import csv  # one RUN --mount's options: not every build's start-up

    try:
        fields = next(csv.reader([value]), [])
    except csv.Error as e:
        raise ValueError(f"invalid mount {value!r}: {e}") from None
    out: dict[str, str] = {}
    for f in fields:
        key, eq, val = f.partition("=")
        key = key.strip().lower()
        if not key:
            continue
        out[key] = val if eq else "true"
    return out


def _expand(word: str, scope: Mapping[str, str], ins: Instruction, escape: str) -> str:
    try:
        return expand(word, scope, escape)
    except ExpandError as e:
        raise ins.error(str(e)) from None


def static_stage_scope(df: Dockerfile, stage: Stage, gscope: Mapping[str, str],
                       build_args: Mapping[str, str], upto: int | None = None) -> dict[str, str]:
    """ARG/ENV scope inside ``stage`` before instruction ``upto`` (default: end), ignoring the base
    image's ENV (unknown until it is pulled). Used to find ``--from`` references ahead of time; the
    executor expands with its real scope."""
    scope: dict[str, str] = {}
    for ins in stage.instructions[:upto]:
        if ins.keyword == "ARG":
            for decl in ins.arg_decls():
                name = _expand(decl.name, scope, ins, df.escape)
                if name in build_args:
                    scope[name] = build_args[name]
                elif decl.default is not None:
                    scope[name] = _expand(decl.default, scope, ins, df.escape)
                elif name in gscope:
                    scope[name] = gscope[name]
        elif ins.keyword == "ENV":
            new = {_expand(k, scope, ins, df.escape): _expand(v, scope, ins, df.escape)
                   for k, v in ins.pairs()}
            scope.update(new)
    return scope


def stage_refs(df: Dockerfile, stage: Stage, gscope: Mapping[str, str],
               build_args: Mapping[str, str]) -> list[tuple[Instruction, int]]:
    """(instruction, stage index) for every ``COPY --from`` / ``RUN --mount from=`` naming a stage."""
    out: list[tuple[Instruction, int]] = []
    for pos, ins in enumerate(stage.instructions):
        values: list[str] = []
        if ins.keyword == "COPY" and ins.flag("from"):
            values.append(ins.flag("from") or "")
        if ins.keyword == "RUN":
            for m in ins.flag_values("mount"):
                try:
                    spec = parse_mount(m)
                except ValueError as e:
                    raise ins.error(str(e)) from None
                if spec.get("from"):
                    values.append(spec["from"])
        if not values:
            continue
        scope = static_stage_scope(df, stage, gscope, build_args, pos)
        for raw in values:
            ref = _expand(raw, scope, ins, df.escape)
            try:
                idx = find_stage(df, ref)
            except DockerfileError as e:
                raise ins.error(e.message) from None
            if idx is not None:
                out.append((ins, idx))
    return out


def plan(df: Dockerfile, build_args: Mapping[str, str] | None = None, target: str | None = None,
         platform: str | None = None) -> BuildPlan:
    """Resolve bases and references and choose the stages ``target`` needs, in build order."""
    build_args = dict(build_args or {})
    target_platform = check_platform(platform) if platform else Platform.host()
    auto = platform_args(target_platform)
    gscope = global_scope(df, build_args, auto)
    if not df.stages:
        raise DockerfileError("no build stage in current context", Location(df.filename, 1))
    resolved: list[ResolvedStage] = []
    for st in df.stages:
        base = _expand(st.base, gscope, st.source, df.escape)
        if not base:
            raise st.source.error(f"base name ({st.base}) should not be blank")
        plat = _expand(st.platform, gscope, st.source, df.escape) if st.platform else None
        base_stage = None
        low = base.lower()
        for other in df.stages:
            if other.name == low and other.index != st.index:
                base_stage = other.index
                break
        rs = ResolvedStage(st, base, base_stage, plat)
        if base_stage is not None:
            rs.deps.add(base_stage)
        for _ins, idx in stage_refs(df, st, gscope, build_args):
            rs.deps.add(idx)
        resolved.append(rs)

    if target:
        tgt = next((s.index for s in df.stages if s.name == target.lower()), None)
        if tgt is None:
            raise DockerfileError(f"target stage \"{target}\" could not be found")
    else:
        tgt = len(df.stages) - 1

    order: list[int] = []
    state: dict[int, int] = {}  # 1 visiting, 2 done

    def visit(i: int) -> None:
        if state.get(i) == 2:
            return
        if state.get(i) == 1:
            st = df.stages[i]
            raise st.source.error(f"circular dependency detected on stage: {st.name or i}")
        state[i] = 1
        for d in sorted(resolved[i].deps):
            visit(d)
        state[i] = 2
        order.append(i)

    visit(tgt)
    used = _used_args(df, order)
    unused = sorted(k for k in build_args if k not in used and k not in PREDEFINED_ARGS)
    return BuildPlan(resolved, order, tgt, gscope, build_args, auto, unused)


def _used_args(df: Dockerfile, order: list[int]) -> set[str]:
    names = {d.name for d in df.global_arg_decls()}
    for i in order:
        for ins in df.stages[i].instructions:
            if ins.keyword == "ARG":
                names.update(d.name for d in ins.arg_decls())
    return names
