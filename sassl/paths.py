"""Where sassl keeps downloads, converted weights and prepared data."""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Iterator


def cache_dir() -> Path:
    """`$SASSL_CACHE`, else `$XDG_CACHE_HOME/sassl`, else `~/.cache/sassl` (created on demand)."""
    root = os.environ.get("SASSL_CACHE")
    if root:
        path = Path(root)
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sassl"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Write a file whole or not at all: yields a temporary path beside `path`, named per process (ranks
    and workers never share one), renamed onto `path` when the block succeeds, removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[str | None]:
    """Try to hold an exclusive advisory flock on `path` (created, with its folder) for the block: yields None
    while this process holds it (its pid and host written in the file), or the holder's line when another
    process does. The operating system releases it when the holder exits, killed or not, so a dead holder never
    blocks. Not POSIX (Windows): nothing to lock, None. NOTE: on NFS, Linux maps flock onto a byte-range lock
    the server sees."""
    try:
        import fcntl
    except ImportError:
        yield None
        return
    import socket

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            yield handle.read().strip() or "another process"
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield None  # closing the file releases the lock
