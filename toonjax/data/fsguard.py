"""File-system guards for the data commands (`dataset pack`, `dataset toyfaces`, `faces extract`).

They keep three promises made to the user:

* Input is read only from regular files, and at most `MAX_FILE_BYTES` of each. A path is
  checked with stat() before it is opened (a FIFO would block the open forever, a tape device
  may rewind on open) and again with fstat() on the opened descriptor (the file may have been
  swapped in between). Symlinks are followed when they lead to a regular file, inside or outside
  SRC: a folder of links into a photo library is a common way to pick a subset, and reading a
  file the user pointed at crosses no privilege boundary. Links to devices, FIFOs, sockets or
  folders are refused; folder symlinks are never descended (`os.walk` default), so a loop of
  links cannot make a listing endless.
* Output never lands on, inside or around the input (`check_apart`), and only where writing is
  possible (`check_writable`, an actual probe: root passes every permission check, yet /proc,
  /sys and read-only mounts still refuse).
* Leftovers of a killed run carry the PID of the run in their name; they are recognised by that
  name *and* a dead PID (`pid_alive`) before anything is removed.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from toonjax.errors import DatasetError

# Far above any real image file (a 16k x 16k 16-bit RGBA TIFF is 2 GiB, but nothing a GAN
# dataset packer at <= 4096 px could want is near this), and small enough that a few of them
# in memory at once stay well under a laptop's RAM.
MAX_FILE_BYTES = 256 << 20

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class RefusedFile(Exception):
    """A file that is not read on purpose; the message is the reason shown to the user."""


def printable(text: object) -> str:
    """`text` with undecodable file-name bytes shown as \\xNN, safe to print and encode as UTF-8.

    On Linux, os.listdir() returns a name that is not valid UTF-8 with its bad bytes as lone
    surrogates ("caf\\udce9.png"); printing or UTF-8-encoding such a string raises.
    """
    s = str(text)
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def read_regular_file(path: str | os.PathLike, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file at `path` (symlinks followed), at most `limit` of them.

    Raises RefusedFile for a non-regular file or one over `limit`; OSError for I/O failures.
    """
    st = os.stat(path)  # follows symlinks: a link to /dev/zero is a character device here
    if not stat.S_ISREG(st.st_mode):
        raise RefusedFile(f"not a regular file ({_kind(st.st_mode)}); it was not opened")
    if st.st_size > limit:
        raise RefusedFile(_too_large(st.st_size, limit))
    # O_NONBLOCK: if the path was swapped for a FIFO since the stat, open() still returns.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RefusedFile(f"not a regular file ({_kind(st.st_mode)}); it was not read")
        return read_at_most(f, st.st_size, limit)


def read_at_most(f, expected: int, limit: int) -> bytes:
    """Reads `f` to EOF, expecting about `expected` bytes; RefusedFile past `limit` bytes.

    The first read asks for exactly what is expected (+1 to see EOF), so a normal file costs
    one allocation of its own size, not of `limit`.
    """
    chunks: list[bytes] = []
    total = 0
    want = min(max(expected, 0), limit) + 1
    while True:
        chunk = f.read(min(max(want - total, 1 << 16), limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise RefusedFile(_too_large(total, limit, grew=True))


def _too_large(size: int, limit: int, grew: bool = False) -> str:
    return (
        f"too large: {'more than ' if grew else ''}{size} bytes (limit {limit >> 20} MiB per "
        "file, far above any real image); it was not read"
    )


def pid_alive(pid: int) -> bool:
    """Whether process `pid` may still be running (unknown counts as alive: keep its files)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, OSError):
        return True
    return True


def _chain_ids(path: Path) -> list[tuple[int, int]]:
    """(st_dev, st_ino) of `path` and of each existing ancestor, nearest first."""
    out = []
    for p in (path, *path.parents):
        try:
            st = os.stat(p)
        except OSError:
            continue
        out.append((st.st_dev, st.st_ino))
    return out


def check_apart(
    src: str | os.PathLike, dest: str | os.PathLike, *, dest_name: str = "DEST"
) -> None:
    """Raises DatasetError when `dest` is `src`, contains it, or lies inside it.

    Paths are compared after resolving symlinks and `..`, and by inode along the chain of
    existing folders, so `./photos`, a symlink to it and a bind mount of it are all the same.
    """
    s, d = Path(src).resolve(), Path(dest).resolve()
    s_ids, d_ids = _chain_ids(s), _chain_ids(d)
    s_exists, d_exists = os.path.exists(s), os.path.exists(d)
    s_id = s_ids[0] if s_exists and s_ids else None
    d_id = d_ids[0] if d_exists and d_ids else None
    hint = f"choose a {dest_name} outside SRC; nothing was changed"
    if s == d or (s_id is not None and s_id == d_id):
        raise DatasetError(f"{printable(dest)}: {dest_name} is SRC ({printable(src)}); {hint}")
    if d in s.parents or (d_id is not None and d_id in s_ids[1:]):
        raise DatasetError(
            f"{printable(dest)}: {dest_name} contains SRC ({printable(src)}), which writing "
            f"{dest_name} would replace; {hint}"
        )
    if s in d.parents or (s_id is not None and s_id in d_ids[1 if d_exists else 0 :]):
        raise DatasetError(
            f"{printable(dest)}: {dest_name} is inside SRC ({printable(src)}); {hint}"
        )


def check_writable(dest: str | os.PathLike, *, dest_name: str = "DEST") -> None:
    """Raises DatasetError unless a folder can be created beside `dest`.

    Probes the nearest existing ancestor of `dest`'s parent by creating and removing an empty
    folder there (permission bits alone say nothing when running as root).
    """
    dest = Path(dest).absolute()
    anc = dest.parent
    while not os.path.lexists(anc) and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise DatasetError(
            f"{printable(dest)}: {dest_name} is not writable: {printable(anc)} is a file, not a "
            f"folder; choose another {dest_name}"
        )
    try:
        probe = tempfile.mkdtemp(prefix=".toonjax-write-test-", dir=anc)
    except OSError as e:
        raise DatasetError(
            f"{printable(dest)}: {dest_name} is not writable ({printable(anc)}: "
            f"{e.strerror or e}); choose a {dest_name} in a folder you can write to"
        ) from e
    os.rmdir(probe)


# errno values that mean "this location cannot take the output", not a bug: shown as one line.
WRITE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "ENOENT", "ENOTDIR", "EISDIR")
    if hasattr(errno, name)
)


def write_error(dest: str | os.PathLike, e: OSError, *, dest_name: str = "DEST") -> DatasetError:
    """A one-line DatasetError for an OSError met while writing `dest`."""
    where = f" ({printable(e.filename)})" if e.filename else ""
    return DatasetError(
        f"{printable(dest)}: cannot write {dest_name}: {e.strerror or e}{where}; "
        f"choose a {dest_name} on a writable disk with free space"
    )
