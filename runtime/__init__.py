"""The container runtime: safe layer extraction, overlay rootfs, namespaces and cgroups.

Modules:

- ``api``       — the runtime's public face: what the client may ask (``inspect_container``,
  ``containers_by_image``, ``extract_layer``); nothing else here is imported from outside.
- ``extract``   — the safe layer extractor the local store uses (``extract_layer``).
- ``images``    — image reference -> config and layer dirs (local store, cached for start-up); the
  CLI hands it a pull function for images that are not there (the runtime imports no client).
- ``record``    — the typed container record (``Container``, ``ContainerConfig``), as state.json.
- ``spec``      — image config + ``run`` flags -> ``ContainerConfig`` (entrypoint, cmd, env,
  confinement, the operator's defaults from the client config).
- ``container`` — the lifecycle: create (dirs, /etc files, cgroup), supervise, clean up, ``-d``.
- ``process``   — fork PID 1 into its namespaces, set it up, exec; exit codes; the command is
  PID 1 (as with docker), or with ``--init`` a small init is PID 1 and forwards signals and reaps
  orphans.
- ``mounts``    — overlay rootfs, /proc, /dev, /sys, volumes, pivot_root, masked paths.
- ``rootfs``    — every path in the rootfs resolved inside it, mounts on fds.
- ``identity``  — user and groups from the image's passwd and group files.
- ``confine``   — keyring, capabilities, no_new_privs, seccomp (``seccomp``, ``bpf``).
- ``devices``   — the device allow-list (cgroup v1 list, v2 BPF program) and ``--device`` nodes.
- ``exec``      — ``pyreg exec``: setns into a running container.
- ``errors``    — ``ContainerError`` and docker's exit codes 125/126/127.
- ``cgroups``   — v1 and v2, detected at run time.
- ``state``     — container records under the run root (``lookup``, ``all_containers``).
- ``linux``     — the ctypes system calls (unshare, setns, mount, pivot_root, prctl, capset).
- ``tty``       — ``run -t``: a pty of the container's devpts, relayed by the supervisor.
- ``logfile``   — a detached container's log and each line's arrival time (``logs --since/-t``).
- ``commands``  — the ``pyreg`` subcommands run, ps, logs, stop, kill, rm, exec, build.
- ``build``     — ``pyreg build``: Dockerfile → image, each ``RUN`` a container of this runtime.

Environment: ``PYREG_RUN_ROOT`` (container state, default ``/run/pyreg``),
``PYREG_CGROUP_VERSION`` (1 or 2: force a cgroup version), ``PYREG_CGROUP_ROOT`` (force a cgroup
root), ``PYREG_CGROUP_PARENT`` (parent group, default ``pyreg``); the image store is the client's
(``PYREG_STORE``).

Rootless: run by a non-root user, the supervisor first enters a user namespace where only its
uid/gid are mapped (to 0), overlay is mounted with ``userxattr`` (the user's store keeps
whiteouts as ``user.overlay.*`` xattrs), and there are no cgroups, so limits are refused.

Start-up matters (``pyreg run --rm busybox true`` is measured by ``bench/runtime_bench.py``):
modules on the run path import only what they need, ``typing`` not at all.
"""
