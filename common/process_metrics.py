"""The one Prometheus registry of a process, with the process's own metrics on it.

Made once in a command's `main` and handed to every component (listener, workers), so that
`kidneyct serve` exposes one set of process metrics beside both components' metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector


def process_registry() -> CollectorRegistry:
    """A fresh registry with resident memory, CPU seconds, open files, GC and Python version."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
    PlatformCollector(registry=registry)  # python_info
    GCCollector(registry=registry)  # python_gc_*
    return registry
