"""The container runtime: safe layer extraction, overlay rootfs, namespaces and cgroups."""
