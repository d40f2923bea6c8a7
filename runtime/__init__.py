"""The container runtime: safe layer extraction, overlay rootfs, namespaces and cgroups.

Modules:

- ``extract``   — the safe layer extractor the local store uses (``extract_layer``).
- ``images``    — image reference -> config and layer dirs (local store, cached for start-up).
- ``container`` — create / start / supervise / exec: namespaces, overlay rootfs, pivot_root,
  /proc /dev /sys, masked paths, capabilities, user, exit codes; the command is PID 1 (as with
  docker), or with ``--init`` a small init is PID 1 and forwards signals and reaps orphans.
- ``cgroups``   — v1 and v2, detected at run time.
- ``state``     — container records under the run root; ``lookup`` / ``inspect`` for the client.
- ``linux``     — the ctypes system calls (unshare, setns, mount, pivot_root, prctl, capset).
- ``tty``       — ``run -t``: a pty of the container's devpts, relayed by the supervisor.
- ``commands``  — the ``pyreg`` subcommands run, ps, logs, stop, kill, rm, exec.

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
