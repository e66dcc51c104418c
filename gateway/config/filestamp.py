"""What identifies one version of a file on disk, so a watcher can tell a replaced file (an edit, or the symlink
swap Kubernetes does for mounted ConfigMaps and Secrets) from an unchanged one without reading it.
"""

from __future__ import annotations

import os
import stat as stat_mode
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What identifies one version of a file; any field changing means it may have new content."""

    resolved: str
    device: int
    inode: int
    size: int
    mtime_ns: int


def stamp(path: str) -> FileStamp | None:
    """The file's stamp, following symlinks; None while it is missing (mid-swap, or deleted) or not a file."""
    if not path:
        return None
    try:
        resolved = os.path.realpath(path)
        info = os.stat(resolved)
    except OSError:
        return None
    if not stat_mode.S_ISREG(info.st_mode):
        return None
    return FileStamp(resolved, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
