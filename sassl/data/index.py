"""File indexes of user folders: walked once, cached, shared by every rank.

Walking ImageNet's 1.28 M files takes minutes on a network filesystem, and every rank (and every
re-run) did it again. `folder_index(root)` walks the tree once (os.walk: one stat-free scandir per
directory), caches the relative paths under `<cache>/index/` (one numpy bytes array: a cached
1.3 M-file index loads without a Python object per file), keyed by the folder's absolute path and the
modification times of the folder and of its sub-folders two levels down (split and class folders:
adding or removing a file there invalidates the cache; deeper trees are re-walked only when one of
those changes). Under torchrun, when any rank cannot read the cache, all ranks walk the tree together
(each its share of the top-level folders) and rank 0 writes the index: no rank waits in a collective
while another walks.
`FileList` holds the paths as one numpy bytes array: a few dozen bytes per file and no per-item Python
objects, so DataLoader workers forked from a rank do not copy it page by page as refcounts change.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from sassl import dist
from sassl.storage import atomic_file, cache_dir, rebuilding

INDEX_FORMAT = 1
SIGNATURE_DEPTH = 2  # folder, split folders, class folders


class FileList(Sequence):
    """Paths `root / rel[i]`, stored compactly; indexing gives a Path, slicing a list of Paths."""

    def __init__(self, root: str | os.PathLike, rel: Sequence[str] | np.ndarray):
        self.root = Path(root)
        self.rel = rel if isinstance(rel, np.ndarray) else np.array([r.encode() for r in rel], dtype=bytes)

    def __len__(self) -> int:
        return len(self.rel)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.root / r.decode() for r in self.rel[i]]
        return self.root / self.rel[i].decode()

    def __iter__(self) -> Iterator[Path]:
        return (self.root / r.decode() for r in self.rel)

    def select(self, keep: np.ndarray) -> "FileList":
        """The files where the boolean mask (or index array) `keep` selects."""
        return FileList(self.root, self.rel[keep])


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _link_refused(target: str, chain: tuple[str, ...]) -> str | None:
    """Why a folder link to `target` is not followed from inside the folders `chain` (the dataset, then the
    folders entered through links), or None."""
    if not os.path.isdir(target):
        return "leads nowhere"
    above = next((c for c in chain if _within(c, target)), None)
    if above is not None:
        return f"contains {above} (a loop)"
    inside = next((c for c in chain if _within(target, c)), None)
    return None if inside is None else f"leads into {inside}, walked already"


def walk(root: str | os.PathLike, dataset_root: str | os.PathLike | None = None,
         skipped_links: list[tuple[str, str]] | None = None) -> list[str]:
    """Relative paths ('a/b.jpg') of every non-hidden file below root (hidden folders pruned), sorted.

    A link to a folder is followed when it leads out of the dataset (`dataset_root`, default root): a class
    folder kept on another disk, say. It is not followed when its target lies inside the dataset or inside a
    folder already entered through a link (its images would be listed twice, under another class), or contains
    one of them (a loop, or a link to /); those links go to `skipped_links` as (link, why). os.walk reads each
    directory once with scandir: no per-file stat."""
    out: list[str] = []
    skipped = skipped_links if skipped_links is not None else []
    top = os.path.realpath(dataset_root if dataset_root is not None else root)
    real = os.path.realpath(root)
    if real != top and os.path.islink(root):  # a top-level link walked on its own (sharded_walk)
        why = _link_refused(real, (top,))
        if why:
            skipped.append((Path(root).name, f"-> {real}: {why}"))
            return out

    def visit(folder: str, prefix: str, chain: tuple[str, ...]) -> None:
        for dirpath, dirnames, filenames in os.walk(folder):  # links are followed below, one at a time
            rel = os.path.relpath(dirpath, folder)
            here = prefix + ("" if rel == "." else rel.replace(os.sep, "/") + "/")
            out.extend(here + f for f in filenames if not f.startswith("."))
            links = sorted(d for d in dirnames if not d.startswith(".") and os.path.islink(os.path.join(dirpath, d)))
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in links]
            for d in links:
                target = os.path.realpath(os.path.join(dirpath, d))
                why = _link_refused(target, chain)
                if why:
                    skipped.append((here + d, f"-> {target}: {why}"))
                else:
                    visit(target, here + d + "/", chain + (target,))

    visit(real, "", (top,) if _within(real, top) else (top, real))
    out.sort()
    return out


def say_skipped_links(root: str | os.PathLike, skipped: list[tuple[str, str]]) -> None:
    """One line for the folder links a walk did not follow."""
    if skipped:
        shown = "; ".join(f"{link} {why}" for link, why in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        print(f"sassl: {root}: not following {len(skipped)} folder link(s): {shown}{more}", flush=True)


def signature(root: Path, depth: int = SIGNATURE_DEPTH) -> str:
    """Hash of the mtimes of root and of its sub-folders down to `depth` levels."""
    h = hashlib.sha256()
    level = [root]
    for k in range(depth + 1):
        nxt = []
        for d in sorted(level):
            h.update(f"{d.relative_to(root)}:{d.stat().st_mtime_ns}\n".encode())
            if k < depth:  # the deepest level is only stat'ed, not listed (ImageNet's class folders)
                with os.scandir(d) as it:
                    nxt += [Path(e.path) for e in it if e.is_dir() and not e.name.startswith(".")]
        level = nxt
    return h.hexdigest()


def index_path(root: Path) -> Path:
    return cache_dir() / "index" / f"{hashlib.sha256(str(root).encode()).hexdigest()[:20]}.npz"


def _read(path: Path, root: Path, sig: str) -> FileList | None:
    """The cached index if it is for this folder in this state; None otherwise (or when unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            rel = data["rel"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as e:
        rebuilding(path, f"cannot be read ({type(e).__name__})")
        return None
    if meta.get("format") != INDEX_FORMAT or meta.get("folder") != str(root):
        rebuilding(path, f"indexes {meta.get('folder')} (format {meta.get('format')}), not {root}")
        return None
    if meta.get("signature") != sig:  # the folder changed since: an index of it as it is now is made
        return None
    return FileList(root, rel)


def _write(path: Path, root: Path, sig: str, files: FileList) -> None:
    meta = json.dumps({"format": INDEX_FORMAT, "folder": str(root), "signature": sig})
    with atomic_file(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez adds no suffix
        np.savez(f, rel=files.rel, meta=np.array(meta))


def folder_index(folder: str | os.PathLike, cache: bool = True) -> FileList:
    """Every non-hidden file below `folder` (sorted), from the cache when the folder has not changed."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    with os.scandir(root) as entries:
        empty = not any(entries)
    if empty:
        raise ValueError(f"{folder}: the folder is empty; put image files (jpg, png, ...) in it")
    if not cache:
        skipped: list[tuple[str, str]] = []
        files = FileList(root, walk(root, skipped_links=skipped))
        say_skipped_links(root, skipped)
        return files
    sig = signature(root)
    path = index_path(root)
    return dist.shared_cache(lambda: _read(path, root, sig), lambda: FileList(root, sharded_walk(root)),
                             lambda files: _write(path, root, sig, files), lambda: _read(path, root, sig) is not None)


def sharded_walk(root: Path) -> list[str]:
    """walk(root) with the work shared by the ranks of a process group: each walks every world-th top-level
    folder (rank 0 also takes the top level's own files), and every rank gets the whole sorted list."""
    skipped: list[tuple[str, str]] = []
    if not dist.is_dist():
        files = walk(root, skipped_links=skipped)
        say_skipped_links(root, skipped)
        return files
    with os.scandir(root) as it:  # a folder link at the top level is walked like a folder, by walk's rules
        entries = sorted((e.name, e.is_dir()) for e in it if not e.name.startswith("."))
    folders = [name for name, is_dir in entries if is_dir]
    mine = [name for name, is_dir in entries if not is_dir] if dist.rank() == 0 else []
    for name in dist.shard(folders):
        mine += [f"{name}/{rel}" for rel in walk(root / name, dataset_root=root, skipped_links=skipped)]
    found = dist.all_objects((mine, skipped))
    if dist.rank() == 0:
        say_skipped_links(root, sorted(link for _, part in found for link in part))
    return sorted(r for part, _ in found for r in part)
