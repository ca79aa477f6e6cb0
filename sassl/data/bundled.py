"""Real images that install without a dataset hub: files taken from Debian packages.

A package is fetched once from a Debian mirror (pinned version and sha256), the wanted files are
extracted from its `data.tar.*` into the sassl cache, and a manifest records what came from where.
A prepare interrupted half-way is detected (no manifest) and redone.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sassl.paths import cache_dir, sha256

MIRROR = os.environ.get("SASSL_DEBIAN_MIRROR", "http://deb.debian.org/debian")


@dataclass(frozen=True)
class DebSource:
    """One pinned Debian package and the folder inside it we keep."""

    name: str
    version: str
    pool_path: str
    sha256: str
    member_dir: str
    license: str

    @property
    def url(self) -> str:
        return f"{MIRROR}/{self.pool_path}"


OPENCV_DOC = DebSource(
    name="opencv-doc", version="4.6.0+dfsg-12",
    pool_path="pool/main/o/opencv/opencv-doc_4.6.0+dfsg-12_all.deb",
    sha256="4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a",
    member_dir="usr/share/doc/opencv-doc/examples/data/",
    license="OpenCV sample data (Apache-2.0 / BSD; see the package's copyright file)")

# Small named sets built from the OpenCV sample images (real photos, one real painting).
OPENCV_PHOTOS = ["apple.jpg", "baboon.jpg", "butterfly.jpg", "fruits.jpg", "HappyFish.jpg", "home.jpg",
                 "messi5.jpg", "orange.jpg", "squirrel_cls.jpg", "building.jpg", "lena.jpg", "aero3.jpg"]
OPENCV_ART = ["starry_night.jpg", "graf1.png", "smarties.png", "board.jpg"]


def read_deb_member_tar(deb: str | os.PathLike) -> tarfile.TarFile:
    """Open the data tarball inside a .deb (an `ar` archive) without dpkg."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise ValueError(f"{deb}: not a Debian package (no ar header)")
        while True:
            header = f.read(60)
            if len(header) < 60:
                raise ValueError(f"{deb}: no data.tar.* member")
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            body = f.read(size)
            if size % 2:
                f.read(1)
            if name.startswith("data.tar"):
                return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")


def extract_deb(deb: str | os.PathLike, member_dir: str, dest: str | os.PathLike) -> list[str]:
    """Extract regular files under `member_dir` (flattened below it) into `dest`; return their names."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    with read_deb_member_tar(deb) as tar:
        for m in tar.getmembers():
            path = m.name.lstrip("./")
            if not m.isfile() or not path.startswith(member_dir):
                continue
            rel = Path(path[len(member_dir):])
            if rel.is_absolute() or ".." in rel.parts:
                continue
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as src, open(dest / rel, "wb") as out:
                shutil.copyfileobj(src, out)
            names.append(str(rel))
    if not names:
        raise ValueError(f"{deb}: nothing under {member_dir}")
    return sorted(names)


def download(url: str, dest: Path, expected_sha256: str) -> Path:
    """Download `url` to `dest` (atomically) and check its sha256."""
    tmp = dest.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
    except OSError as e:
        raise RuntimeError(f"could not download {url} ({e}). Set SASSL_DEBIAN_MIRROR to a reachable Debian "
                           "mirror, or place the .deb file in the cache folder by hand.") from None
    got = sha256(tmp)
    if got != expected_sha256:
        tmp.unlink()
        raise RuntimeError(f"{url}: sha256 {got} does not match the pinned {expected_sha256}")
    os.replace(tmp, dest)
    return dest


def prepare_deb(src: DebSource, root: Path | None = None, deb_file: str | os.PathLike | None = None) -> Path:
    """The extracted folder for `src`, fetched and extracted on first use (no-op afterwards)."""
    root = Path(root) if root else cache_dir() / "data"
    out = root / f"{src.name}-{src.version}"
    manifest = out / "manifest.json"
    if manifest.is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    deb = Path(deb_file) if deb_file else root / Path(src.pool_path).name
    if not deb.is_file():
        download(src.url, deb, src.sha256)
    elif sha256(deb) != src.sha256:
        raise RuntimeError(f"{deb}: sha256 does not match the pinned {src.sha256}; delete it and retry")
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{src.name}-"))
    names = extract_deb(deb, src.member_dir, tmp)
    (tmp / "manifest.json").write_text(json.dumps(
        {"package": src.name, "version": src.version, "url": src.url, "sha256": src.sha256,
         "license": src.license, "files": len(names)}, indent=1))
    if out.exists():
        shutil.rmtree(out)  # a half-finished earlier prepare
    os.replace(tmp, out)
    if not deb_file:
        deb.unlink()  # the extracted files are what we keep
    return out


def opencv_images(kind: str = "photos") -> list[Path]:
    """Paths of the OpenCV sample photos (`photos`) or art/texture images (`art`), fetched on first use."""
    names = {"photos": OPENCV_PHOTOS, "art": OPENCV_ART}.get(kind)
    if names is None:
        raise ValueError(f"kind must be 'photos' or 'art', got {kind!r}")
    folder = prepare_deb(OPENCV_DOC)
    return [folder / n for n in names if (folder / n).is_file()]
