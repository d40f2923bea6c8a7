"""``pyreg run``: create and start a container from a local (or pulled) image."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any


def parse_bytes(text: str) -> int:
    """``--memory``'s type: runtime/spec.py knows the units (imported when used, not for --help)."""
    from pyreg.runtime.spec import parse_bytes as parse

    return parse(text)


def _usage_error(message: str) -> Exception:
    """argparse's error for a bad value, imported only then (the run path parses without it)."""
    import argparse

    return argparse.ArgumentTypeError(message)


def parse_volume(text: str) -> tuple[str, str, bool]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
        raise _usage_error(f"invalid volume {text!r}: expected HOST:CONTAINER[:ro|rw]")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise _usage_error(f"invalid volume mode {mode!r} in {text!r}")
    return os.path.abspath(parts[0]), parts[1], mode == "ro"


def add_arguments(p: argparse.ArgumentParser) -> None:
    import argparse

    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background, print the id")
    p.add_argument("--name", help="container name")
    p.add_argument("--restart", default="no", type=_restart_policy, metavar="POLICY",
                   help="with -d: no (default), always, unless-stopped, on-failure[:N] (pyreg stop ends it)")
    p.add_argument("-l", "--label", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set a label on the container (ps --filter label=KEY[=VALUE] finds it)")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="accepted for docker compatibility: stdin is always passed to the container")
    p.add_argument("-t", "--tty", action="store_true", help="give the container a pseudo-terminal")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="set an env variable")
    p.add_argument("--env-file", action="append", default=[], metavar="F", help="read env variables")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="USER[:GROUP] (names or ids)")
    p.add_argument("--entrypoint", help="override the image's entrypoint")
    p.add_argument("--hostname", help="container host name")
    p.add_argument("-v", "--volume", action="append", default=[], type=parse_volume,
                   metavar="HOST:CTR[:ro]", help="bind mount")
    p.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    p.add_argument("--init", action="store_true",
                   help="run an init as PID 1 that forwards signals and reaps zombies (as docker --init)")
    p.add_argument("-m", "--memory", type=parse_bytes, help="memory limit (e.g. 256m)")
    p.add_argument("--cpus", type=float, help="CPU quota in CPUs (e.g. 0.5)")
    p.add_argument("--pids-limit", type=int, help="maximum number of processes")
    p.add_argument("--privileged", action="store_true",
                   help="all capabilities, every device, no seccomp filter (as docker; deliberate only)")
    p.add_argument("--cap-add", action="append", default=[], metavar="CAP",
                   help="add a capability (NET_ADMIN, CAP_SYS_TIME, ALL); also widens seccomp as docker")
    p.add_argument("--cap-drop", action="append", default=[], metavar="CAP",
                   help="drop a capability (or ALL)")
    p.add_argument("--security-opt", action="append", default=[], metavar="OPT",
                   help="seccomp=unconfined|FILE.json (docker's format), no-new-privileges[=true|false]")
    p.add_argument("--device", action="append", default=[], metavar="HOST[:CTR][:rwm]",
                   help="give the container a host device (bound into /dev, allowed in the devices cgroup)")
    p.add_argument("--network", "--net", default=None, metavar="NETWORK",
                   help="bridge (root's default: pyreg0, NAT), pasta (other users' default), slirp4netns, "
                        "none (only lo), host, or a 'pyreg network create' network; the default "
                        "also from PYREG_NETWORK or the client config's run.network")
    p.add_argument("--network-alias", action="append", default=[], metavar="NAME",
                   help="another name the container has on a user network")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:][HPORT:]PORT[/udp]",
                   help="publish a container port on the host (bridge, pasta, slirp4netns)")
    p.add_argument("-P", "--publish-all", action="store_true", help="publish every EXPOSEd port")
    p.add_argument("image", help="image to run (pulled when not local)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments (default: the image's)")


# parse_simple's view of add_arguments: option -> dest, by kind. tests/test_cli_fast_parse.py
# checks that it names every option of the argparse parser and parses as argparse does.
_FLAGS = {"--rm": "rm", "-d": "detach", "--detach": "detach", "-i": "interactive",
          "--interactive": "interactive", "-t": "tty", "--tty": "tty", "--read-only": "read_only",
          "--init": "init", "--privileged": "privileged", "-P": "publish_all", "--publish-all": "publish_all"}
_VALUES = {"--name": "name", "--restart": "restart", "-w": "workdir", "--workdir": "workdir",
           "-u": "user", "--user": "user", "--entrypoint": "entrypoint", "--hostname": "hostname",
           "-m": "memory", "--memory": "memory", "--cpus": "cpus", "--pids-limit": "pids_limit",
           "--network": "network", "--net": "network"}
_LISTS = {"-l": "label", "--label": "label", "-e": "env", "--env": "env", "--env-file": "env_file",
          "-v": "volume", "--volume": "volume", "--cap-add": "cap_add", "--cap-drop": "cap_drop",
          "--security-opt": "security_opt", "--device": "device", "--network-alias": "network_alias",
          "-p": "publish", "--publish": "publish"}


def parse_simple(argv: list[str]) -> Any:
    """``run``'s arguments without argparse, whose import and parser cost ~4 ms of a 40 ms start:
    a namespace as argparse's, or None when ``argv`` is anything but plain — exactly spelled
    options (``--opt VALUE`` / ``--opt=VALUE``, one short option per word), values that don't
    start with ``-``, values their type accepts, then the image — so argparse, parsing it again,
    gives the help, the errors and every corner of its grammar as before."""
    from types import SimpleNamespace

    from pyreg.storage.plainargs import plain_options

    types: dict[str, Callable[[str], Any]] = {
        "restart": _restart_policy, "memory": parse_bytes, "cpus": float, "pids_limit": int,
        "volume": parse_volume}
    parsed = plain_options(argv, _FLAGS, _VALUES, _LISTS, types, stop_at_word=True)
    if parsed is None:
        return None  # -h, --help, -it, -eK=V, an abbreviation, --: argparse knows
    out, words = parsed
    if not words or words[0] == "-" or words[1:2] == ["--"]:
        return None
    if out["restart"] is None:
        out["restart"] = "no"
    out["image"], out["command"] = words[0], words[1:]
    return SimpleNamespace(**out)


def _restart_policy(text: str) -> str:
    name, sep, count = text.partition(":")
    if name in ("no", "always", "unless-stopped") and not sep:
        return text
    if name == "on-failure" and (not sep or (count.isdigit() and int(count) > 0)):
        return text
    raise _usage_error(f"invalid restart policy {text!r}: no, always, unless-stopped or on-failure[:N]")


def _read_env_file(path: str) -> list[str]:
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def default_network(rootless: bool) -> str:
    """As docker's: bridge for root; for other users pasta (podman 5's rootless default), else
    slirp4netns (rootless docker's, podman 4's), else none."""
    if not rootless:
        return "bridge"
    from pyreg.runtime.network import pasta, slirp

    return "pasta" if pasta.available() else "slirp4netns" if slirp.available() else "none"


def _network(args: argparse.Namespace, image_config: dict[str, Any], rootless: bool,
             defaults: dict[str, Any]) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """(network, ports, net): ``--network``, else PYREG_NETWORK, else the client config's
    ``run.network``, else :func:`default_network`. none and host without -p import nothing of
    runtime.network: their start-up stays as it was."""
    network = (args.network or os.environ.get("PYREG_NETWORK") or defaults.get("network")
               or default_network(rootless))
    if network in ("none", "host") and not args.publish and not args.publish_all:
        return network, [], {}
    from pyreg.runtime.network import DEFAULT_SUBNET, networks

    published: list[dict[str, Any]] = []
    if args.publish or args.publish_all:  # socket and threading: only then
        from pyreg.runtime.network import ports

        published = [ports.parse(p) for p in args.publish]
        if args.publish_all:
            published += ports.exposed(image_config)
    if network in ("slirp4netns", "pasta"):
        from pyreg.runtime.network import pasta, slirp

        if not (pasta if network == "pasta" else slirp).available():
            raise ValueError(f"--network {network}: {network} is not installed (Debian: "
                             f"{'passt' if network == 'pasta' else network})")
        return network, published, {"network": network}
    net: dict[str, Any] = {}
    if network not in ("none", "host"):
        net = networks.resolve(network, str(os.environ.get("PYREG_SUBNET") or defaults.get("subnet")
                                            or DEFAULT_SUBNET))
        net["aliases"] = list(args.network_alias)
        network = "bridge"  # how the runtime wires it; net["network"] says which
    if network == "bridge" and rootless:
        raise ValueError("--network bridge needs root; rootless containers have pasta (their "
                         "default), slirp4netns, none or host")
    if published and network != "bridge":
        raise ValueError(f"-p/-P need --network bridge, pasta or slirp4netns, not {network}")
    return network, published, net


def run(args: argparse.Namespace, pull: Callable[[str], None] | None = None) -> int:
    """``pull(ref)``, handed over by the CLI (client/cli.py), fetches an image that is not in the
    local store: the runtime imports no client code. Without it such an image is an error."""
    from pyreg.runtime import container, images, spec, state
    from pyreg.runtime.errors import EXIT_PYREG, ContainerError
    from pyreg.runtime.record import Container

    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    try:
        env = [e for f in args.env_file for e in _read_env_file(f)] + list(args.env)
    except OSError as e:
        print(f"pyreg: --env-file: {e}", file=sys.stderr)
        return EXIT_PYREG
    try:
        name, digest, image_config, layers, warning = images.resolve(args.image, pull=pull)
    except Exception as e:
        print(f"pyreg: {e}", file=sys.stderr)
        return EXIT_PYREG
    if warning is not None:  # docker warns, then tries it
        print(warning, file=sys.stderr)
    cfg = spec.build_config(image_config, cmd=args.command, entrypoint=args.entrypoint, env=env,
                            workdir=args.workdir, user=args.user)
    if not cfg.argv:
        print("pyreg: no command specified", file=sys.stderr)
        return EXIT_PYREG
    taken = {r.name for r in state.all_containers()}
    if args.name and args.name in taken:
        print(f"pyreg: the container name {args.name!r} is already in use", file=sys.stderr)
        return EXIT_PYREG
    for host, _, _ in args.volume:  # as docker: a missing host path becomes a directory
        if not os.path.exists(host):
            try:
                os.makedirs(host)
            except OSError as e:
                print(f"pyreg: volume {host}: {e.strerror}", file=sys.stderr)
                return EXIT_PYREG
    try:
        spec.confinement(cfg, privileged=args.privileged, cap_add=args.cap_add, cap_drop=args.cap_drop,
                         security_opt=args.security_opt, device=args.device)
        defaults = spec.run_defaults()
    except ValueError as e:
        print(f"pyreg: {e}", file=sys.stderr)
        return EXIT_PYREG
    rootless = os.geteuid() != 0
    try:
        network, ports, net = _network(args, image_config, rootless, defaults)
    except ValueError as e:
        print(f"pyreg: {e}", file=sys.stderr)
        return EXIT_PYREG
    memory = args.memory if args.memory is not None or rootless else defaults["memory"]
    cid = state.new_id()
    cfg.hostname, cfg.network, cfg.read_only = args.hostname or cid[:12], network, args.read_only
    cfg.volumes, cfg.memory, cfg.cpus, cfg.pids_limit = list(args.volume), memory, args.cpus, args.pids_limit
    cfg.pids_default, cfg.rm, cfg.layers = defaults["pidslimit"], args.rm, layers
    cfg.rootless, cfg.tty, cfg.init = rootless, args.tty, args.init
    cfg.publish = ports
    if args.restart != "no" and (not args.detach or args.rm):
        print("pyreg: --restart needs -d and conflicts with --rm", file=sys.stderr)
        return EXIT_PYREG
    cfg.extra["restart"] = args.restart
    cfg.extra["labels"] = {**((image_config.get("config") or {}).get("Labels") or {}),
                           **dict(item.partition("=")[::2] for item in args.label)}
    rec = Container(
        id=cid, name=args.name or state.random_name({n for n in taken if n}), image=args.image,
        image_name=name, image_digest=digest, config=cfg, created=state.now(), detached=args.detach,
    )
    if network in ("bridge", "slirp4netns", "pasta"):
        rec.net = net
    try:
        code = container.run(rec, args.detach)
    except ContainerError as e:
        print(f"pyreg: {e}", file=sys.stderr)
        return e.code
    if args.detach:
        print(cid)
    return code
