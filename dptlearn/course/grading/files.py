"""Submission entries on disk: only regular files are read.

A submissions folder comes from an LMS download, a git clone or a tar file: any entry in it may
be a symbolic link (to the teacher's ``solutions/``, to a classmate's notebook, to nothing), a
FIFO (a read blocks for ever), a device, a socket or a folder that is named ``*.ipynb``. Such an
entry is never opened: ``find_entries`` lists it (folders are walked without following links),
``what_is`` says what it is in words, and ``read_regular`` opens only a regular file, without
following a link and without blocking, and checks what it opened (no race between a check and
the open).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from . import safetext

SKIPPED_FOLDERS = (".ipynb_checkpoints",)


class NotRegular(Exception):
    """The entry is not a regular file; the message says what it is."""


def what_is(path: str) -> str | None:
    """None for a regular file, else what the entry is, e.g. ``a symbolic link (to ../x.ipynb)``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        target = safetext.path_text(os.readlink(path))[:200]
        if not os.path.exists(path):
            return f"a dangling symbolic link (to {target})"
        return f"a symbolic link (to {target})"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def read_regular(path: str, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit`` + 1 of them); NotRegular saying
    what it is otherwise; FileNotFoundError when it is gone."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError:
        raise NotRegular(what_is(path) or "not openable") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegular(what_is(path) or "not a regular file")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def find_entries(args: list[str]) -> list[str]:
    """The submissions named by ``args``: a file as given (whatever it is); a folder (given, so
    followed) walked without following links: every entry named ``*.ipynb`` of any type, and every
    link to a folder (not followed, so it is listed to be refused, not silently dropped). The walk
    is a loop, not a recursion: a submission unpacked into folders 2000 deep is walked too."""
    out = []
    for arg in args:
        if not os.path.isdir(arg):
            out.append(arg)
            continue
        found, todo = [], [arg]
        while todo:
            folder = todo.pop()
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:                 # unreadable or gone: nothing below it is listed
                continue
            for e in entries:
                is_dir = e.is_dir(follow_symlinks=False)
                if e.name.endswith(".ipynb") or (e.is_symlink() and os.path.isdir(e.path)):
                    found.append(e.path)
                elif is_dir and e.name not in SKIPPED_FOLDERS:
                    todo.append(e.path)
        out += sorted(found, key=lambda s: Path(s).parts)
    return out


def hard_link_notes(paths: list[str]) -> dict[str, str]:
    """A note for each regular file of ``paths`` that has other names (hard links, which tar and
    ``cp -l`` keep): the same file as another submission, or a name of a file found elsewhere."""
    by_inode: dict[tuple[int, int], list[str]] = {}
    links: dict[str, int] = {}
    for p in paths:
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            by_inode.setdefault((st.st_dev, st.st_ino), []).append(p)
            links[p] = st.st_nlink
    notes = {}
    for same in by_inode.values():
        for p in same:
            others = [safetext.path_text(o) for o in same if o != p]
            notes[p] = (f"the file is a hard link: the same file as {', '.join(others[:3])}"
                        if others else
                        f"the file is a hard link ({links[p]} names): its other names are not "
                        f"among the submissions; check that it is the student's own")
    return notes
