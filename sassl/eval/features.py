"""Frozen-backbone features of a dataset's images: preprocessed as the paper evaluates, streamed through a
DataLoader (sharded over ranks under torchrun), and cached on disk as float16 per split.

Preprocessing (`EvalImages`): the shorter side resized to size / crop_fraction, then the centre size x size
crop (crop_fraction 0.875: the paper's 256 -> 224 for 224-px models, scaled for small ones; 1.0: the whole
centre square, the kNN monitor's); or, for augmented probes, a seeded random resized crop and flip. Images
are decoded only as far as that needs (decode.load_for_crops) and leave the workers as uint8.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from sassl import dist
from sassl.interrupt import ignore_in_workers
from sassl.data.decode import load_for_crops
from sassl.data.loader import decode_size, key_generator, resized_crop, sample_crop
from sassl.storage import atomic_file, cache_dir, rebuilding
from sassl.views import imagenet_normalize
PREPROCESS_VERSION = 1  # bump when the pixels a setting gives change: old cached features are then ignored


def centre_box(w: int, h: int, crop_fraction: float) -> tuple[int, int, int, int]:
    """The centre square that resizing the shorter side to S / crop_fraction and cutting S x S keeps."""
    side = max(1, round(min(w, h) * crop_fraction))
    return (w - side) // 2, (h - side) // 2, side, side


class EvalImages(torch.utils.data.Dataset):
    """(uint8 (3, size, size), label) of ds[indices[k]]: the centre crop (see module doc), or with
    `augment_seed` a random resized crop (area `scale`), a horizontal flip and the colour ops of COLOUR_P,
    seeded by (augment_seed, positions[k]) (positions: where item k sits in the whole list, so a rank's
    share draws what a single process would). Unusable files are replaced by the next usable one."""

    # NOTE: the paper's augmented probe names grayscale, solarisation and blur without their probabilities;
    # these are our reading (BYOL's second view for gray and solarise, blur at half its first view's rate),
    # blur sigma 0.1-2.0 px of a 224-px crop scaled to the crop, kernel 10% of the side
    COLOUR_P = {"gray": 0.2, "blur": 0.5, "solarize": 0.2}

    def __init__(self, ds, indices: list[int], size: int, crop_fraction: float = 1.0, augment_seed: int | None = None,
                 scale=(0.08, 1.0), positions=None):
        if not 0 < crop_fraction <= 1:
            raise ValueError(f"crop_fraction: must lie in (0, 1], got {crop_fraction}")
        self.ds, self.indices, self.size, self.crop_fraction = ds, indices, size, crop_fraction
        self.augment_seed, self.scale = augment_seed, scale
        self.positions = range(len(indices)) if positions is None else positions

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        g = None if self.augment_seed is None else key_generator(self.augment_seed, self.positions[k])
        state = g.get_state() if g is not None else None
        plan: dict = {}

        def box(w: int, h: int) -> tuple[int, int]:
            if g is None:
                plan["box"] = centre_box(w, h, self.crop_fraction)
            else:
                g.set_state(state)
                plan["box"] = sample_crop(w, h, g, self.scale)
            plan["full"] = (w, h)
            return decode_size(w, h, [plan["box"]], self.size)

        j, img = self.ds.usable(self.indices[k], read=lambda path: load_for_crops(path, box))
        if "box" not in plan:  # an image held in memory
            box(img.width, img.height)
        x = resized_crop(img, plan["box"], self.size, plan["full"])
        if g is not None:
            x = self._augment(x, g)
        return x, self.ds.labels[j]

    def _augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Flip (p 0.5), then grayscale, blur and solarise with COLOUR_P, on a uint8 (3, S, S) crop."""
        from torchvision.transforms.v2 import functional as TF

        draws = torch.rand(5, generator=g).tolist()
        if draws[0] < 0.5:
            x = x.flip(-1)
        if draws[1] < self.COLOUR_P["gray"]:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        if draws[2] < self.COLOUR_P["blur"]:
            sigma = (0.1 + 1.9 * draws[3]) * self.size / 224
            x = TF.gaussian_blur(x, [max(3, int(0.1 * self.size) | 1)] * 2, [sigma, sigma])
        if draws[4] < self.COLOUR_P["solarize"]:
            x = torch.where(x >= 128, 255 - x, x)
        return x


@torch.no_grad()
def stream_features(backbone: torch.nn.Module, ds, indices: list[int], image_size: int, batch_size: int = 256,
                    num_workers: int = 2, crop_fraction: float = 1.0, augment_seed: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features (N, D) float32 and labels (N,) of ds[indices] (EvalImages, ImageNet normalisation,
    eval mode), on the backbone's device, streamed: only the features are ever held. Under torch.distributed
    rank r embeds indices[r::world] and every rank gets all N back, in `indices` order."""
    world, r = dist.world_size(), dist.rank()
    mine = EvalImages(ds, indices[r::world], image_size, crop_fraction, augment_seed,
                      positions=range(r, len(indices), world))
    dev = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    # a split of a batch or two decodes in this process: starting a worker would cost more than it saves
    workers = num_workers if len(mine) > 2 * batch_size else 0
    loader = torch.utils.data.DataLoader(mine, batch_size=batch_size, num_workers=workers,
                                         pin_memory=dev.type == "cuda", worker_init_fn=ignore_in_workers)
    for x, y in loader:
        feats.append(backbone(imagenet_normalize(x.to(dev, non_blocking=True).float().div_(255))).float())
        labels.append(y.to(dev))
    if not feats:  # fewer images than ranks: this rank has none, but its (0, D) part must match the others'
        feats.append(backbone(torch.zeros(1, 3, image_size, image_size, device=dev)).float()[:0])
    backbone.train(was_training)
    f = torch.cat(feats)
    y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=dev)
    if world == 1:
        return f, y
    fs, ys = dist.gather_uneven(f), dist.gather_uneven(y)
    out_f = torch.empty(len(indices), fs[0].shape[1], device=dev)
    out_y = torch.empty(len(indices), dtype=torch.long, device=dev)
    for k in range(world):  # rank k held positions k, k + world, ...
        out_f[k::world], out_y[k::world] = fs[k], ys[k]
    return out_f, out_y


def encoder_fingerprint(backbone: torch.nn.Module) -> str:
    """sha256 of the backbone's weights and buffers (names, dtypes, shapes, bytes): any change to the
    checkpoint changes it."""
    h = hashlib.sha256()
    for name, t in sorted(backbone.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def dataset_fingerprint(ds, indices: list[int]) -> str:
    """sha256 of which images (their file paths, or the pixels held in memory) and labels `indices` pick."""
    h = hashlib.sha256(json.dumps([ds.name, len(ds)]).encode())
    idx = np.asarray(indices, dtype=np.int64)
    h.update(idx.tobytes())
    if ds.files is not None:
        rel = getattr(ds.files, "rel", None)
        if rel is not None:
            h.update(np.ascontiguousarray(rel).tobytes())
            h.update(str(getattr(ds.files, "root", "")).encode())
        else:
            h.update("\n".join(str(ds.files[i]) for i in indices).encode())
    else:
        h.update(ds.images[torch.as_tensor(idx)].numpy().tobytes())
    h.update(np.asarray(ds.labels, dtype=np.int64)[idx].tobytes())
    return h.hexdigest()


def cached_features(backbone: torch.nn.Module, ds, indices: list[int], image_size: int, crop_fraction: float = 1.0,
                    fingerprint: str | None = None, batch_size: int = 256, num_workers: int = 2,
                    cache: bool = True) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(features (N, D) float16, labels (N,), reused) of ds[indices] on the backbone's device.

    Cached under <cache>/features/ keyed by the encoder's fingerprint (encoder_fingerprint, or the one given),
    the images and labels picked (dataset_fingerprint) and the preprocessing (size, crop fraction, version):
    a second evaluation of the same encoder reuses them, a changed checkpoint never does. Every rank streams
    its share unless every rank can read the cache (decided together, so no rank skips the collectives the
    others enter); rank 0 writes the file (and each node's first process, where a node-local cache lacks it)."""
    dev = next(backbone.parameters()).device
    key = hashlib.sha256(json.dumps([fingerprint or encoder_fingerprint(backbone), dataset_fingerprint(ds, indices),
                                     image_size, crop_fraction, PREPROCESS_VERSION]).encode()).hexdigest()[:32]
    path = cache_dir() / "features" / f"{key}.pt"

    def read():
        if not (cache and path.is_file()):
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            feats, labels = saved["features"], saved["labels"]
        except Exception as e:  # noqa: BLE001 (a damaged cache file is recomputed)
            rebuilding(path, f"cannot be read ({type(e).__name__})")
            return None
        want = torch.as_tensor(np.asarray(ds.labels, dtype=np.int64)[np.asarray(indices, dtype=np.int64)])
        if saved.get("key") != key or feats.ndim != 2 or len(feats) != len(indices) or not torch.equal(labels.cpu(), want):
            rebuilding(path, f"holds other features ({tuple(feats.shape)} for {len(indices)} images, key "
                             f"{saved.get('key')}, not {key})")
            return None
        return feats.to(dev), labels.to(dev), True

    def build():
        f, y = stream_features(backbone, ds, indices, image_size, batch_size, num_workers, crop_fraction)
        return f.half(), y, False

    def save(value):
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as tmp:
                torch.save({"features": value[0].cpu(), "labels": value[1].cpu(), "key": key}, tmp)

    # one decision for all ranks: the features are streamed (with collectives) unless every rank has them
    return dist.shared_cache(read, build, save, path.is_file)

__all__ = ["EvalImages", "cached_features", "centre_box", "dataset_fingerprint", "encoder_fingerprint",
           "stream_features"]
