"""Kernel layer: syscalls, namespaces, mounts, processes. Takes primitives only."""
