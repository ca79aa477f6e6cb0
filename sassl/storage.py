"""Where sassl keeps things and how it writes them: the cache folder, whole-or-nothing writes, storage faults said in
words (full, read-only, gone), caches that cannot be written or do not belong, exclusive locks."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from pathlib import Path
from typing import Iterator

# what an OSError's errno means to a user, and what to do about it
CAUSES = {
    errno.ENOSPC: ("no space left on device", "free space there, or write elsewhere (--runs-dir, SASSL_CACHE)"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota, or write elsewhere (--runs-dir, SASSL_CACHE)"),
    errno.EROFS: ("read-only file system", "write to a writable folder (--runs-dir, SASSL_CACHE)"),
    errno.EACCES: ("permission denied", "make the folder writable for this user, or write elsewhere"),
    errno.EPERM: ("operation not permitted", "make the folder writable for this user, or write elsewhere"),
    errno.ENOENT: ("the folder is gone (deleted or unmounted)", "recreate or remount it, or write elsewhere"),
    errno.EIO: ("input/output error (a failing disk or a lost network mount)", "check the disk or the mount"),
}


class StorageError(RuntimeError):
    """A write that failed for a reason of the storage (full, read-only, gone), said in words with the path."""

    def __init__(self, path: str | os.PathLike, cause: str, advice: str, need: int | None = None,
                 verb: str = "cannot write"):
        size = f": {need / 1e6:.1f} MB needed" if need else ""
        super().__init__(f"{verb} {path}: {cause}{size}; {advice}")
        self.path, self.cause = Path(path), cause


def _torch_writer_failed(e: BaseException) -> bool:
    """torch.save's C++ writer reports a full disk as `[enforce fail at inline_container.cc] unexpected pos`."""
    return isinstance(e, RuntimeError) and any(k in str(e) for k in ("inline_container", "unexpected pos",
                                                                      "PytorchStreamWriter", "file write failed"))


def storage_error(path: str | os.PathLike, e: BaseException, need: int | None = None) -> StorageError | None:
    """The StorageError that `e`, raised while writing `path`, stands for; None for other errors. torch's writer
    says no errno: a disk with less free space than `need` (or than 1 MB) is called full."""
    if isinstance(e, StorageError):
        return e
    if isinstance(e, OSError) and e.errno in CAUSES:
        return StorageError(path, *CAUSES[e.errno], need if e.errno in (errno.ENOSPC, errno.EDQUOT) else None)
    if _torch_writer_failed(e):
        try:
            free = shutil.disk_usage(Path(path).parent).free
        except OSError:
            free = None
        if free is not None and free < max(need or 0, 1 << 20):
            return StorageError(path, *CAUSES[errno.ENOSPC], need)
        return StorageError(path, f"the write failed ({str(e).splitlines()[0][:200]})", "check the disk", need)
    return None


def cache_dir() -> Path:
    """`$SASSL_CACHE`, else `$XDG_CACHE_HOME/sassl`, else `~/.cache/sassl` (created on demand; where it cannot
    be, a read-only home say, the caches in it are not written and the work goes on without them)."""
    root = os.environ.get("SASSL_CACHE")
    if root:
        path = Path(root)
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sassl"
    with contextlib.suppress(OSError):
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
def atomic_file(path: str | os.PathLike, need: int | None = None) -> Iterator[Path]:
    """Write a file whole or not at all: yields a temporary path beside `path`, named per process (ranks
    and workers never share one), renamed onto `path` when the block succeeds, removed when it fails (the
    previous file stays as it was). A failure of the storage (full, read-only, gone) becomes a StorageError
    naming the path and, with `need` (bytes), the size that did not fit."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except Exception as e:
        err = storage_error(path, e, need)
        if err is None:
            raise
        raise err from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def storage_errors(where: str | os.PathLike) -> Iterator[None]:
    """Within the block, an OSError of the storage (full, read-only, no permission, failing) becomes a
    StorageError naming its file (else `where`): a job's writes say what happened instead of a traceback.
    A missing file stays a FileNotFoundError (it is as likely a read)."""
    try:
        yield
    except OSError as e:
        if e.errno not in CAUSES or e.errno == errno.ENOENT:
            raise
        raise StorageError(e.filename or where, *CAUSES[e.errno], verb="cannot use") from e


def rebuilding(path: str | os.PathLike, why: str) -> None:
    """The one line a cache that does not belong to what is being computed gets before it is computed again."""
    print(f"sassl: the cache {path} {why}; computing it again", flush=True)


_SAID: set[str] = set()  # the causes already said


def warn_cache_unwritten(e: StorageError) -> None:
    """A cache that cannot be written is not an error: the work goes on with the value in memory (computed
    again next time). Said once per cause (a read-only cache folder refuses the file index, the weights and the
    style bank alike)."""
    if e.cause not in _SAID:
        _SAID.add(e.cause)
        print(f"sassl: {e}; going on without this cache, and without any other that cannot be written for the same "
              "reason (the same results, computed again next time)", flush=True)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, wait: str = "") -> Iterator[str | None]:
    """Try to hold an exclusive advisory flock on `path` (created, with its folder) for the block: yields None
    while this process holds it (its pid and host written in the file), or the holder's line when another
    process does. `wait`: what the lock guards (e.g. "building the bundled set textures"); then a process that
    finds it held says so in one line and waits for it, and always yields None. The operating system releases it
    when the holder exits, killed or not, so a dead holder never blocks. Not POSIX (Windows): nothing to lock,
    None. NOTE: on NFS, Linux maps flock onto a byte-range lock the server sees."""
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
            holder = handle.read().strip() or "another process"
            if not wait:
                yield holder
                return
            print(f"sassl: {holder} is {wait}; waiting for it", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield None  # closing the file releases the lock
