"""Changes to the pipelines folder as the kernel reports them (Linux inotify), so that an idle
runner learns of an edited, added or removed pipeline file at once, without stat-ing every file
of the folder every few seconds (with 1,000 DAG files that scan was nearly all of an idle
runner's CPU).

The watch only says *that* something changed; the runner then compares the files' sizes and
times as before, so an event it does not care about (an editor's swap file) loads nothing. When
inotify is not there or runs out of watches, ``FolderWatch.open`` returns None and the runner
scans on its timer as it always did; a slow scan stays behind a watch too, for file systems
whose changes the kernel does not see (a network mount edited from another machine).
"""
from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

_IN_ATTRIB = 0x4
_IN_CLOSE_WRITE = 0x8
_IN_MOVED_FROM = 0x40
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_IGNORED = 0x8000
_IN_ISDIR = 0x40000000
# A file is news once written and closed, moved in or out, removed, or touched: not while it is
# being written (IN_MODIFY), nor as it is made (IN_CREATE, before its first byte), when the
# runner would read half a file and record an error that is not there. A folder made counts.
_MASK = (_IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE
         | _IN_DELETE | _IN_DELETE_SELF | _IN_MOVE_SELF)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


class FolderWatch:
    """Every folder of a pipelines tree (as ``pipeline_files`` walks it), watched for changes."""

    def __init__(self, fd: int, root: Path, add_watch: ctypes._CFuncPtr) -> None:
        self.fd = fd
        self.root = root
        self._add_watch = add_watch
        self._identity = _identity(root)

    @classmethod
    def open(cls, root: Path) -> FolderWatch | None:
        """A watch on ``root`` and its folders, or None where the kernel cannot give one."""
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            init, add_watch = libc.inotify_init1, libc.inotify_add_watch
        except (OSError, AttributeError):
            return None  # not Linux
        add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None  # out of inotify instances
        watch = cls(fd, root, add_watch)
        if not watch._watch_tree():
            watch.close()
            return None
        return watch

    def fileno(self) -> int:
        return self.fd

    def changed(self) -> bool:
        """Whether anything changed since the last call (every queued event is read). A folder
        made since is watched from now; a replaced root (a deploy that swaps a symlink) too."""
        changed = grew = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                return True  # the kernel's queue overflowed or similar: look at the files
            if not data:
                break
            offset = 0
            while offset < len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                if mask & _IN_IGNORED or (mask & _IN_CREATE and not mask & _IN_ISDIR):
                    continue  # a watch went with its folder; a file made is news once closed
                changed = True
                if mask & _IN_ISDIR and mask & (_IN_CREATE | _IN_MOVED_TO):
                    grew = True
        identity = _identity(self.root)
        if identity != self._identity:  # the path now names another folder
            self._identity, changed, grew = identity, True, True
        if grew:
            self._watch_tree()
        return changed

    def _watch_tree(self) -> bool:
        """Watch ``root`` and the folders under it that hold pipelines; False when the kernel
        refuses one (its limit of watches reached): the runner then scans instead."""
        if not self.root.is_dir():
            return True  # nothing to watch yet: the slow scan finds it when it comes
        for folder, dirs, _ in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
            if self._add_watch(self.fd, os.fsencode(folder), _MASK) < 0:
                return False
        return True

    def close(self) -> None:
        os.close(self.fd)


def _identity(root: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(root)
    except OSError:
        return None
    return st.st_dev, st.st_ino
