"""Container networking (``--network bridge``, ``-p``): one job per module.

``ipam`` hands out addresses from the bridge's subnet, ``bridge`` makes the bridge, the veth pair
and the container's network namespace (iproute2's ip, batched), ``nat`` the outbound
masquerade (iptables chains of our own), ``ports`` parses ``-p``/``-P`` and runs the userland
proxy for published ports, ``files`` writes the container's /etc/hosts and resolv.conf.

Everything is made in the network namespace ``pyreg run`` runs in (the host's, or a test's), and
undone with the container; a ``pyreg run`` killed with SIGKILL leaves its veth to the kernel (it
dies with the container's namespace) and its bridge/NAT to the next pyreg command
(``state.refresh`` -> :func:`runtime.network.bridge.release`).
"""

BRIDGE = "pyreg0"
DEFAULT_SUBNET = "10.88.0.0/16"
