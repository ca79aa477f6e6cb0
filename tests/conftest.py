import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # the helpers beside it (also pyproject.toml's pythonpath)
# figures as HTML only: a PNG costs about 3 s of headless browser each; the tests that check PNGs turn it back on
os.environ.setdefault("SASSL_PNG", "0")


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


def photo_crops_folder(root, photos, counts, size, stride=16, class_name="c{}", file_name="{}.png", **save):
    """root/<split>/<class>/<file>: crops of real photos (class c starts at photo c * stride), `counts` =
    {split: (images per class, crop shift)}, 3 classes, resized to `size` (w, h), saved with `save` options."""
    from PIL import Image

    for split, (n, shift) in counts.items():
        for c in range(3):
            (root / split / class_name.format(c)).mkdir(parents=True)
            for i in range(n):
                img = Image.open(photos[(c * stride + i) % len(photos)]).convert("RGB")
                w, h = img.size
                box = ((i * 37 + shift) % (w // 2), (i * 23 + shift) % (h // 2))
                img.crop(box + (box[0] + w // 2, box[1] + h // 2)).resize(size).save(
                    root / split / class_name.format(c) / file_name.format(i), **save)
    return root


@pytest.fixture(scope="session")
def jpeg_folder(tmp_path_factory, photos):
    """A user folder in ImageNet's layout: train/ and val/, 3 class folders each, 64 + 16 real-photo crops
    per class re-encoded as small JPEGs (240 files)."""
    return photo_crops_folder(tmp_path_factory.mktemp("jpegs"), photos, {"train": (64, 0), "val": (16, 13)},
                              (48, 40), stride=7, class_name="n{:08d}", file_name="{:04d}.JPEG", quality=90)


@pytest.fixture(scope="session")
def style_folder(tmp_path_factory, art):
    """Six real paintings as a style folder."""
    import shutil

    root = tmp_path_factory.mktemp("styles")
    for p in art[:6]:
        shutil.copy(p, root / p.name)
    return root


TSNE_SMALL = dict(sources=["paintings", "textures"], per_dataset=10, perplexity=5.0, iterations=250, name="st")


@pytest.fixture(scope="session")
def style_tsne_run(tmp_path_factory):
    """notebooks/style_tsne.ipynb executed once by papermill with TSNE_SMALL, as `sassl notebook` leaves it:
    its run folder (runs/st, with the executed notebook). Shared by the notebook and JupyterLab tests."""
    pm = pytest.importorskip("papermill")
    runs = tmp_path_factory.mktemp("tsne-runs")
    (runs / "st").mkdir()
    mp = pytest.MonkeyPatch()
    mp.setenv("SASSL_RUNS", str(runs))  # the kernel inherits it
    try:
        pm.execute_notebook(str(Path(__file__).parent.parent / "notebooks" / "style_tsne.ipynb"),
                            str(runs / "st" / "style_tsne.ipynb"), parameters=TSNE_SMALL,
                            cwd=str(Path(__file__).parent.parent / "notebooks"), progress_bar=False, log_output=False)
    finally:
        mp.undo()
    return runs / "st"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, photos):
    """Real-photo crops in 3 class folders: 48 in train/, 12 in val/ (the kNN monitor's split), a stand-in
    dataset small enough for a test."""
    return photo_crops_folder(tmp_path_factory.mktemp("tiny"), photos, {"train": (16, 0), "val": (4, 11)}, (40, 40))
