"""aip's shared-memory segments on this machine: which exist, whose, and which are stale.

Every segment aip creates is named ``aip_...`` and starts with an
``aip_segment_header`` (``_core/include/aip_layout.h``) that records who
created it: the creator's pid, its start time (so that a recycled pid is
not taken for the creator) and its PID namespace. A segment is normally
unlinked by its creator, or by ``multiprocessing``'s resource tracker when
the creator is killed; when the tracker dies too (``kill -9`` of a process
group, an OOM kill), the segment stays in ``/dev/shm`` until reboot.

:func:`clean_stale` removes those, and only those: a segment is *stale*
when its creator, identified by pid and start time, is gone. It never
touches a segment whose creator still runs, a segment another user owns,
one made in another PID namespace (a container: its pids mean nothing
here), or a file it cannot read as an aip header. ``aip doctor --clean``
and the manager's start-up sweep both call it.

Listing needs a shared-memory filesystem (``/dev/shm`` on Linux); macOS
has none, and there the functions find nothing.
"""
from __future__ import annotations

import os
import stat
import struct
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

from aip._core._segment import SEGMENT_PREFIX, process_alive

SHM_DIR = Path("/dev/shm")

# aip_segment_header, as laid out in aip_layout.h (native-endian, 64 bytes):
# magic u32 @0, layout_version u32 @4, total_size u64 @8, generation u64 @16,
# creator_pid u32 @24, closed u32 @28, header_size u32 @32, (pad) @36,
# pid_namespace u64 @40, creator_start u64 @48, reserved @56.
_HEADER = struct.Struct("=IIQQIII4xQQ8x")
HEADER_SIZE = _HEADER.size
LAYOUT_VERSION = 2
KINDS = {0x53504941: "SlotTable", 0x52504941: "ResultRing"}
# A creator killed between sizing the segment and publishing its magic (the
# magic is stored last) leaves magic 0 with the rest of the header written.
_UNPUBLISHED = 0

# What a segment is, for a report; only STALE segments are ever removed.
LIVE = "live"  # its creator runs
STALE = "stale"  # its creator is gone: safe to remove
OTHER_USER = "other user"  # owned by another uid: never ours to remove
OTHER_NAMESPACE = "other pid namespace"  # its creator's pid means nothing here
UNKNOWN = "unknown"  # not readable as an aip header (empty, truncated, another layout)


@dataclass(frozen=True)
class SegmentInfo:
    """One ``aip_*`` file of the shared-memory directory, as read now."""

    name: str
    path: Path
    size: int  # bytes of the file
    uid: int  # owner
    kind: str  # SlotTable, ResultRing, unpublished, or ? where unreadable
    creator_pid: int | None
    creator_start: int | None
    pid_namespace: int | None
    state: str  # LIVE, STALE, OTHER_USER, OTHER_NAMESPACE or UNKNOWN
    reason: str  # why it is in that state, for a person

    @property
    def removable(self) -> bool:
        return self.state == STALE


def our_pid_namespace() -> int:
    """This process's PID namespace id as the core records it (0 where unknown)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def read_segment(path: Path, *, uid: int | None = None, pid_namespace: int | None = None) -> SegmentInfo:
    """Classify one segment file. ``uid`` / ``pid_namespace``: whose view (default: ours)."""
    me = os.geteuid() if uid is None else uid
    namespace = our_pid_namespace() if pid_namespace is None else pid_namespace
    info = os.lstat(path)

    def make(state: str, reason: str, kind: str = "?", fields: tuple[int, ...] | None = None) -> SegmentInfo:
        pid = start = ns = None
        if fields is not None:
            pid, ns, start = fields[4], fields[7], fields[8]
        return SegmentInfo(path.name, path, info.st_size, info.st_uid, kind, pid, start, ns, state, reason)

    if not stat.S_ISREG(info.st_mode):
        return make(UNKNOWN, "not a regular file")
    if info.st_uid != me:
        return make(OTHER_USER, f"owned by uid {info.st_uid}")
    try:
        # O_NOFOLLOW: a link planted under an aip_ name is not followed.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            raw = os.pread(fd, HEADER_SIZE, 0)
        finally:
            os.close(fd)
    except OSError as error:
        return make(UNKNOWN, f"cannot read its header: {error.strerror}")
    if len(raw) < HEADER_SIZE:
        return make(UNKNOWN, f"{len(raw)} bytes, shorter than a segment header")
    fields = _HEADER.unpack(raw)
    magic, version = fields[0], fields[1]
    kind = KINDS.get(magic, "unpublished" if magic == _UNPUBLISHED else "?")
    if kind == "?" or version != LAYOUT_VERSION:
        return make(UNKNOWN, f"not an aip layout {LAYOUT_VERSION} header "
                    f"(magic 0x{magic:08x}, version {version})", kind, fields)
    pid, ns, start = fields[4], fields[7], fields[8]
    if pid <= 0:
        return make(UNKNOWN, "no creator pid in its header", kind, fields)
    if ns and namespace and ns != namespace:
        return make(OTHER_NAMESPACE, f"made in pid namespace {ns}, this is {namespace}", kind, fields)
    if process_alive(pid, start):
        return make(LIVE, f"creator pid {pid} runs", kind, fields)
    return make(STALE, f"creator pid {pid} is gone", kind, fields)


def list_segments(directory: Path = SHM_DIR) -> list[SegmentInfo]:
    """Every ``aip_*`` segment in ``directory``, classified (empty where there is none)."""
    try:
        names = sorted(entry.name for entry in os.scandir(directory)
                       if entry.name.startswith(SEGMENT_PREFIX))
    except OSError:
        return []
    found = []
    for name in names:
        try:
            found.append(read_segment(directory / name))
        except FileNotFoundError:
            continue  # unlinked meanwhile
    return found


def stale_segments(directory: Path = SHM_DIR) -> list[SegmentInfo]:
    """The segments of this user whose creator process is gone."""
    return [segment for segment in list_segments(directory) if segment.removable]


def clean_stale(directory: Path = SHM_DIR, *, only: Container[str] | None = None) -> list[SegmentInfo]:
    """Remove this user's stale aip segments; returns those removed.

    ``only``: names to consider (the others are left whatever they are).
    Each segment is classified again just before it is unlinked, so a
    segment is never removed on an old reading.
    """
    removed = []
    for segment in stale_segments(directory):
        if only is not None and segment.name not in only:
            continue
        try:
            again = read_segment(segment.path)
            if not again.removable or again.creator_pid != segment.creator_pid:
                continue
            os.unlink(segment.path)  # what shm_unlink does on Linux
        except FileNotFoundError:
            continue  # someone else removed it first
        removed.append(segment)
    return removed


__all__ = [
    "LIVE", "OTHER_NAMESPACE", "OTHER_USER", "SHM_DIR", "STALE", "UNKNOWN", "SegmentInfo",
    "clean_stale", "list_segments", "read_segment", "stale_segments",
]
