"""Image sources by name: a folder path or a bundled set."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from sassl.data.bundled import opencv_images
from sassl.data.decode import list_files

# name -> function returning the image paths (fetched and cached on first use).
BUNDLED: dict[str, Callable[[], list[Path]]] = {
    "opencv-photos": lambda: opencv_images("photos"),
    "opencv-art": lambda: opencv_images("art"),
}


def image_paths(source: str) -> list[Path]:
    """Files of a bundled set (by name) or of a folder (recursively). Unknown names raise, listing what exists."""
    if source in BUNDLED:
        return BUNDLED[source]()
    path = Path(source)
    if path.is_dir():
        return list_files(path)
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"{source!r} is neither a folder, an image file, nor a bundled set "
                            f"(bundled: {', '.join(sorted(BUNDLED))})")
