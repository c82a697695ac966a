"""System-wide file handles: `fs.file-nr` against `fs.file-max` (every socket is a descriptor)."""

from __future__ import annotations

from auditor.errors import InputError
from auditor.facts.model import FileHandles, Unavailable
from auditor.hostfs import HostRoot


def file_handles(
    values: dict[str, str], missing: dict[str, str], host: HostRoot
) -> FileHandles | Unavailable:
    if "fs.file-nr" not in values:
        return Unavailable(missing.get("fs.file-nr", "fs.file-nr not read"))
    parts = values["fs.file-nr"].split()
    try:
        allocated, free, maximum = (int(p) for p in parts)
    except ValueError:
        raise InputError(
            host.sysctl_path("fs.file-nr"),
            1,
            f"expected three integers, got {values['fs.file-nr']!r}",
        ) from None
    nr_open = values.get("fs.nr_open")
    return FileHandles(
        allocated=allocated,
        free=free,
        max=maximum,
        nr_open=int(nr_open) if nr_open and nr_open.isdigit() else None,
    )
