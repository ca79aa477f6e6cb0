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
