"""What machine a benchmark ran on: CPU model, cores, RAM, load, Python and package versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _first_value(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        return None
    return None


def _cgroup_cpu_limit() -> float | None:
    """CPUs granted by a cgroup v2 quota (``cpu.max``), None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return round(int(quota) / int(period), 2)


def describe_machine() -> dict:
    from pipelines.annotate import package_versions

    mem_total = _first_value("/proc/meminfo", "MemTotal")  # "24683652 kB"
    ram_gib = round(int(mem_total.split()[0]) / 1024**2, 1) if mem_total else None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": _first_value("/proc/cpuinfo", "model name") or platform.processor(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "cgroup_cpu_limit": _cgroup_cpu_limit(),
        "ram_gib": ram_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }
