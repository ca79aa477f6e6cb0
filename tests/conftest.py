import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def stylizer():
    from sassl.stylizer import pretrained

    return pretrained("cpu")


@pytest.fixture(scope="session")
def model_dir():
    from sassl.stylizer.weights import find_model_dir

    return find_model_dir()


@pytest.fixture(scope="session")
def photos():
    """Real photos (OpenCV sample data, fetched once from Debian)."""
    from sassl.data import image_paths

    return image_paths("opencv-photos")


@pytest.fixture(scope="session")
def art():
    """Real painting / art images (Starry Night, graffiti, ...)."""
    from sassl.data import image_paths

    return image_paths("opencv-art")


def load_batch(paths, size):
    from sassl.data.decode import center_square, load_rgb, to_tensor

    return torch.stack([to_tensor(center_square(load_rgb(p), size)) for p in paths])


@pytest.fixture(scope="session")
def jpeg_folder(tmp_path_factory, photos):
    """A user folder in ImageNet's layout: train/ and val/, 3 class folders each, 64 + 16 real-photo crops
    per class re-encoded as small JPEGs (240 files)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("jpegs")
    for split, n, shift in (("train", 64, 0), ("val", 16, 13)):
        for c in range(3):
            (root / split / f"n{c:08d}").mkdir(parents=True)
            for i in range(n):
                img = Image.open(photos[(c * 7 + i) % len(photos)]).convert("RGB")
                w, h = img.size
                box = ((i * 37 + shift) % (w // 2), (i * 23 + shift) % (h // 2))
                img.crop(box + (box[0] + w // 2, box[1] + h // 2)).resize((48, 40)).save(
                    root / split / f"n{c:08d}" / f"{i:04d}.JPEG", quality=90)
    return root


@pytest.fixture(scope="session")
def style_folder(tmp_path_factory, art):
    """Six real paintings as a style folder."""
    import shutil

    root = tmp_path_factory.mktemp("styles")
    for p in art[:6]:
        shutil.copy(p, root / p.name)
    return root
