"""Container networking (``--network bridge|slirp4netns|NAME``, ``-p``): one job per module.

``ipam`` hands out addresses from the bridge's subnet, ``bridge`` makes the bridge (once, left up
as docker's docker0) and each container's veth pair and namespace, ``ifconfig`` the container's
side of it (ioctls), ``nat`` the outbound masquerade (iptables chains of our own, checked on
every start: a firewall reload may have flushed them), ``ports`` parses ``-p``/``-P`` and runs the
userland proxy for published ports (every IPv6 host address: the bridges are IPv4-only), ``dnat``
the iptables DNAT of ports on non-loopback IPv4 addresses, ``janitor`` runs that proxy outside
the container's pid namespace, ``networks`` user networks and their names, ``pasta`` and
``slirp`` rootless networking, ``files`` the container's /etc/hosts and resolv.conf.

Everything is made in the network namespace ``pyreg run`` runs in (the host's, or a test's). A
container's veth dies with its namespace (``kill -9`` included); its port proxy, its DNAT rules,
slirp4netns and pasta's watcher end with its supervisor (a pipe's EOF); its name leaves the
others' /etc/hosts with it, or on the next pyreg command after a ``kill -9`` (``state.refresh``
-> ``bridge.release``)."""

BRIDGE = "pyreg0"
DEFAULT_SUBNET = "10.88.0.0/16"
