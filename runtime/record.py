"""The container record: what was run (``ContainerConfig``) and how it went (``Container``).

Stored as ``containers/<id>/state.json`` (runtime/state.py) in the same JSON shape the plain
dicts of earlier pyreg versions had, so containers started before an upgrade can still be listed,
stopped and removed (and after a downgrade, too): every key is optional on load (a record from
before ``--privileged``/``--device`` existed gets today's defaults, the ones the old code read),
and keys this version does not know are kept and written back as they were.

Plain classes with ``__slots__`` rather than dataclasses: ``dataclasses`` imports ``inspect``,
about 8 ms — a sixth of the ``pyreg run`` start-up budget.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings
if TYPE_CHECKING:
    from typing import Any

# --------------------------------------------------------------------------- what runs

_CONFIG_KEYS = (
    "entrypoint", "cmd", "argv", "env", "workdir", "user", "stop_signal",
    "privileged", "capabilities", "seccomp", "no_new_privileges", "devices",
    "hostname", "network", "read_only", "volumes", "memory", "cpus", "pids_limit", "pids_default",
    "rm", "layers", "rootless", "tty", "init",
    "publish",
)


class ContainerConfig:
    """What to run and how: the image config overridden by flags (runtime/spec.py), the
    confinement, the limits and the layer dirs. Fixed once the container is created."""

    __slots__ = (*_CONFIG_KEYS, "extra")

    def __init__(self, *, entrypoint: list[str] | None = None, cmd: list[str] | None = None,
                 argv: list[str] | None = None, env: list[str] | None = None, workdir: str = "/",
                 user: str = "", stop_signal: str = "SIGTERM", privileged: bool = False,
                 capabilities: list[str] | None = None, seccomp: str | None = None,
                 no_new_privileges: bool = True, devices: list[dict[str, Any]] | None = None,
                 hostname: str = "", network: str = "none", read_only: bool = False,
                 volumes: list[tuple[str, str, bool]] | None = None, memory: int | None = None,
                 cpus: float | None = None, pids_limit: int | None = None, pids_default: int | None = None,
                 rm: bool = False, layers: list[str] | None = None, rootless: bool = False,
                 tty: bool = False, init: bool = False, extra: dict[str, Any] | None = None,
                 publish: list[dict[str, Any]] | None = None) -> None:
        self.entrypoint: list[str] = list(entrypoint or [])
        self.cmd: list[str] = list(cmd or [])
        self.argv: list[str] = list(argv or [])
        self.env: list[str] = list(env or [])
        self.workdir: str = workdir or "/"
        self.user: str = user or ""
        self.stop_signal: str = stop_signal or "SIGTERM"
        self.privileged: bool = bool(privileged)
        # None: Docker's defaults (linux.DEFAULT_CAPS); a list: exactly these
        self.capabilities: list[str] | None = None if capabilities is None else list(capabilities)
        # None or "default": Docker's profile; "unconfined"; else a profile's JSON text
        self.seccomp: str | None = seccomp
        self.no_new_privileges: bool = bool(no_new_privileges)
        # runtime/devices.py parse_device(): {"path", "container_path", "rule", ...}
        self.devices: list[dict[str, Any]] = list(devices or [])
        self.hostname: str = hostname or ""
        self.network: str = network or "none"
        self.read_only: bool = bool(read_only)
        self.volumes: list[tuple[str, str, bool]] = [(str(h), str(c), bool(ro)) for h, c, ro in volumes or []]
        self.memory: int | None = memory
        self.cpus: float | None = cpus
        self.pids_limit: int | None = pids_limit
        self.pids_default: int | None = pids_default
        self.rm: bool = bool(rm)
        self.layers: list[str] = list(layers or [])
        self.rootless: bool = bool(rootless)
        self.tty: bool = bool(tty)
        self.init: bool = bool(init)
        self.extra: dict[str, Any] = dict(extra or {})  # keys of another pyreg version, kept
        # -p/-P as asked (runtime/network/ports.py parse()): {host_ip, host_port, port, proto}
        self.publish: list[dict[str, Any]] = [dict(p) for p in publish or []]

    def to_json(self) -> dict[str, Any]:
        out = {**self.extra, **{k: getattr(self, k) for k in _CONFIG_KEYS}}
        out["volumes"] = [list(v) for v in self.volumes]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerConfig:
        known = {k: data[k] for k in _CONFIG_KEYS if k in data}
        for key in ("workdir", "user", "stop_signal", "hostname", "network"):  # null: the default
            if known.get(key) is None:
                known.pop(key, None)
        return cls(**known, extra={k: v for k, v in data.items() if k not in known and k not in _CONFIG_KEYS})

    def replace(self, **changes: Any) -> ContainerConfig:
        """A copy with ``changes`` (``pyreg exec``: another argv, more env, another user)."""
        return ContainerConfig.from_json({**self.to_json(), **changes})


# --------------------------------------------------------------------------- how it went

# written only once set (a record says "pid" from the moment it has one, as before)
_OPTIONAL_KEYS = ("status", "cgroup", "supervisor", "supervisor_start", "pid", "pid_start", "started_at",
                  "exit_code", "oom_killed", "finished_at", "error", "net")
_CONTAINER_KEYS = ("id", "name", "image", "image_name", "image_digest", "config", "created", "detached",
                   *_OPTIONAL_KEYS)


class Container:
    """One container: identity, image, config, and its life so far (status created -> running
    -> exited; the host pids of PID 1 and the supervisor with their start times, so a recycled
    pid is never taken for them; exit code, OOM kill, the error that stopped it; its cgroup)."""

    __slots__ = (*_CONTAINER_KEYS, "extra")

    def __init__(self, *, id: str, config: ContainerConfig, name: str = "", image: str = "",
                 image_name: str = "", image_digest: str = "", created: str = "", detached: bool = False,
                 status: str | None = None, cgroup: dict[str, Any] | None = None,
                 supervisor: int | None = None, supervisor_start: int | None = None,
                 pid: int | None = None, pid_start: int | None = None, started_at: str | None = None,
                 exit_code: int | None = None, oom_killed: bool | None = None,
                 finished_at: str | None = None, error: str | None = None,
                 extra: dict[str, Any] | None = None, net: dict[str, Any] | None = None) -> None:
        self.id: str = id
        self.name: str = name or ""
        self.image: str = image or ""
        self.image_name: str = image_name or ""
        self.image_digest: str = image_digest or ""
        self.config: ContainerConfig = config
        self.created: str = created or ""
        self.detached: bool = bool(detached)
        self.status: str | None = status
        self.cgroup: dict[str, Any] | None = cgroup  # runtime/cgroups.py Cgroup.to_dict()
        self.supervisor: int | None = supervisor
        self.supervisor_start: int | None = supervisor_start
        self.pid: int | None = pid
        self.pid_start: int | None = pid_start
        self.started_at: str | None = started_at
        self.exit_code: int | None = exit_code
        self.oom_killed: bool | None = oom_killed
        self.finished_at: str | None = finished_at
        self.error: str | None = error
        self.extra: dict[str, Any] = dict(extra or {})
        # --network bridge: {subnet, ip, gateway, prefixlen, ports: the published ones, bound}
        self.net: dict[str, Any] | None = net

    @property
    def running(self) -> bool:
        """What the record says (runtime/state.py ``refresh`` corrects it when the pids are gone)."""
        return self.status == "running"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        for key in _CONTAINER_KEYS:
            value = getattr(self, key)
            if key in _OPTIONAL_KEYS and value is None:
                continue
            out[key] = value.to_json() if key == "config" else value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Container:
        """A record as stored by this or an earlier pyreg (``KeyError``/``TypeError``/``ValueError``
        when it is not one at all)."""
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise ValueError("not a container record")
        cfg = data.get("config") or {}
        if not isinstance(cfg, dict):
            raise ValueError("not a container record: bad config")
        known = {k: data[k] for k in _CONTAINER_KEYS if k in data and k != "config"}
        extra = {k: v for k, v in data.items() if k not in _CONTAINER_KEYS}
        return cls(**known, config=ContainerConfig.from_json(cfg), extra=extra)

    def copy(self) -> Container:
        return Container.from_json(self.to_json())
