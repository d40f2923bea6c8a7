"""The last steps before ``execve``: session keyring, no_new_privs, capabilities, seccomp.

| defence | attack it stops | what runc/docker does |
|---|---|---|
| a fresh anonymous session keyring | reading (possessing) the keys of the caller's session, e.g. a key the host's root added | runc joins a new session keyring per container |
| Docker's default capabilities; ``--cap-add``/``--cap-drop``/``--privileged`` as docker | raw I/O, module loading, mounts, clock, ptrace of the host… (CAP_SYS_ADMIN and friends) | same defaults and flags |
| no_new_privs on by default (``--security-opt no-new-privileges=false`` turns it off) | setuid/setcap binaries in the image giving a non-root user root or capabilities | docker: off unless asked for; pyreg goes past it |
| seccomp (runtime/seccomp.py), loaded last | the syscalls Docker's profile denies | same, loaded by runc just before exec |

``prepare(cfg)`` runs in the container's set-up process while the host's filesystem is still
there (before ``pivot_root``, or before ``setns`` into the mount namespace for ``exec``): it
resolves the capability set and compiles the seccomp program (from a root-only cache when it
can). ``apply`` then runs with nothing left to read from disk. A failure of either is fatal for
the container: nothing runs half-confined.
"""  # noqa: E501

from __future__ import annotations

import os

from pyreg.runtime import linux, seccomp  # imported before the fork: cheaper than in the child (CoW)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pyreg.runtime.record import ContainerConfig

ALL = "ALL"


class Plan:
    """What ``apply`` enforces: capability numbers, no_new_privs, the seccomp program or None."""

    def __init__(self, caps: set[int], nnp: bool, prog: bytes | None) -> None:
        self.caps = caps
        self.nnp = nnp
        self.prog = prog


_plan: Plan | None = None
_keyring_joined = False
_bounding_dropped = False
_seccomp_loaded = False


def normalize_cap(name: str) -> str:
    """``net_admin``, ``NET_ADMIN``, ``CAP_NET_ADMIN`` -> ``CAP_NET_ADMIN``; ``all`` -> ``ALL``."""
    upper = name.strip().upper()
    if upper == ALL:
        return ALL
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in linux.CAPS:
        raise ValueError(f"unknown capability: {name!r}")
    return full


def all_caps() -> list[str]:
    """Every capability this kernel knows (up to cap_last_cap) that the caller's bounding set
    still has (pyreg may itself run confined, e.g. without CAP_SYS_RESOURCE)."""
    last = linux.last_cap()
    bounding = (1 << (last + 1)) - 1
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    bounding = int(line.split()[1], 16)
    except OSError:
        pass
    return [n for n, i in linux.CAPS.items() if i <= last and bounding >> i & 1]


def tweak_capabilities(adds: list[str], drops: list[str], privileged: bool) -> list[str]:
    """Docker's rule (moby oci/caps TweakCapabilities): privileged gets all; ``--cap-add ALL``
    all but the drops; ``--cap-drop ALL`` only the adds; else the defaults minus drops plus adds."""
    if privileged:
        return all_caps()
    base = list(linux.DEFAULT_CAPS)
    if not adds and not drops:
        return base
    add = [normalize_cap(c) for c in adds]
    drop = [normalize_cap(c) for c in drops]
    if ALL in add:
        caps = [c for c in all_caps() if c not in drop]
    elif ALL in drop:
        caps = [c for c in add if c != ALL]
    else:
        caps = [c for c in base if c not in drop] + add
    return list(dict.fromkeys(caps))


def _cache_dir() -> str | None:
    from pyreg.runtime import state

    try:
        return os.path.join(state.run_root(), "seccomp-cache")
    except Exception:
        return None


def prepare(cfg: ContainerConfig) -> Plan:
    """Resolve and compile, while the host's files are still reachable; remembered for apply."""
    global _plan
    names = cfg.capabilities
    if names is None:
        names = list(linux.DEFAULT_CAPS)
    caps = {linux.CAPS[n] for n in names if n in linux.CAPS}
    nnp = cfg.no_new_privileges
    prog = None
    profile = cfg.seccomp
    if profile != "unconfined":
        raw = seccomp.load_profile() if profile in (None, "default") else str(profile).encode()
        prog = seccomp.compile_cached(raw, set(names), _cache_dir())
    _plan = Plan(caps, nnp, prog)
    return _plan


def apply(uid: int, gid: int, groups: list[int], rootless: bool = False, switch_user: bool = True) -> None:
    """Keyring, no_new_privs, bounding set, user, capabilities, then seccomp — in that order:
    the filter goes last so that nothing pyreg itself still has to do can trip on it (without
    no_new_privs it must go in before the uid switch, while CAP_SYS_ADMIN still allows it, as
    runc does). Idempotent across a fork (``--init``'s child repeats only the user switch)."""
    global _keyring_joined, _bounding_dropped, _seccomp_loaded
    plan = _plan
    if plan is None:
        raise RuntimeError("confinement was not prepared before the container's root was entered")
    if not _keyring_joined:
        linux.join_session_keyring()
        _keyring_joined = True
    if plan.nnp:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    elif plan.prog is not None and not _seccomp_loaded:
        _load(plan.prog)
    if not _bounding_dropped:  # dropping again needs CAP_SETPCAP, which may be gone by now
        linux.drop_bounding_set(plan.caps)
        _bounding_dropped = True
    if switch_user:
        if not rootless:  # rootless: setgroups is denied in the user namespace, as it must be
            os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)  # a non-root uid loses every capability here
    if uid == 0:
        linux.capset(plan.caps, plan.caps, set())
    if plan.prog is not None and not _seccomp_loaded:
        _load(plan.prog)


def device_rules(cfg: ContainerConfig) -> tuple[Any, ...]:
    """The container's device allow-list: Docker's defaults plus ``--device`` ones, or all of
    them with ``--privileged``."""
    from pyreg.runtime import devices

    if cfg.privileged:
        return devices.ALLOW_ALL
    extra = devices.rules_from([d["rule"] for d in cfg.devices])
    return devices.DEFAULT_RULES + extra


def _load(prog: bytes) -> None:
    global _seccomp_loaded
    seccomp.load(prog)
    _seccomp_loaded = True
