"""The training input pipeline: two random resized crops per image, decoded only as far as the crops need,
as uint8 batches from persistent workers, moved to the device ahead of the step.

    EpochSampler -> (epoch, index) keys -> TwoCrops in the workers (JPEG draft decode, two crops, uint8)
        -> DataLoader (persistent workers, pinned memory on CUDA) -> DevicePrefetcher (side-stream copy)
        -> to_unit on the device -> the batched views (sassl.views)

The crop boxes are torchvision's RandomResizedCrop, drawn in the full image's coordinates before decoding
(tests/data/test_loader.py compares their distribution with torchvision's); the decode then stops at the
smallest JPEG scale that still gives each crop at least its output size in pixels.
"""
from __future__ import annotations

import math
import os
import warnings

import torch
import torch.nn.functional as F
from PIL import Image

from sassl import dist
from sassl.interrupt import ignore_in_workers
from sassl.data.decode import load_for_crops, to_uint8
from sassl.data.registry import Dataset

Box = tuple[int, int, int, int]  # left, top, width, height in the full image's pixels


def sample_crop(w: int, h: int, g: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> Box:
    """torchvision's RandomResizedCrop box (left, top, width, height): area ~ U(scale), log-uniform ratio."""
    area = w * h
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand((), generator=g).item())
        r = math.exp(log_r[0] + (log_r[1] - log_r[0]) * torch.rand((), generator=g).item())
        cw, ch = round(math.sqrt(target * r)), round(math.sqrt(target / r))
        if 0 < cw <= w and 0 < ch <= h:
            left = int(torch.randint(0, w - cw + 1, (), generator=g))
            top = int(torch.randint(0, h - ch + 1, (), generator=g))
            return left, top, cw, ch
    side = min(w, h)  # fallback: centre crop
    return (w - side) // 2, (h - side) // 2, side, side


def key_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded by a tuple of ints (e.g. (seed, epoch, index)): the same draws wherever the key
    is evaluated (any worker, any rank, a resumed run)."""
    return torch.Generator().manual_seed(hash(key) & ((1 << 62) - 1))


def decode_size(w: int, h: int, boxes: list[Box], size: int) -> tuple[int, int]:
    """The smallest decoded image size that still gives every box at least size x size source pixels."""
    return (math.ceil(size * w / min(b[2] for b in boxes)), math.ceil(size * h / min(b[3] for b in boxes)))


def resized_crop(img: Image.Image | torch.Tensor, box: Box, size: int, full: tuple[int, int]) -> torch.Tensor:
    """`box` (in the coordinates of the full w x h image `full`) of `img`, resized (bilinear, antialiased) to
    (3, size, size) uint8. img: a PIL image, possibly a reduced decode of the full one, or a full-size
    (3, H, W) uint8 tensor (torchvision's uint8 resize, which matches PIL's to a fraction of a grey level)."""
    left, top, cw, ch = box
    if isinstance(img, torch.Tensor):  # channels-last: torch's vectorised uint8 antialiased kernel
        x = img[None].contiguous(memory_format=torch.channels_last)[:, :, top:top + ch, left:left + cw]
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)[0]
    sx, sy = img.width / full[0], img.height / full[1]
    return to_uint8(img.resize((size, size), Image.BILINEAR, box=(left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)))


def random_resized_crop(img: Image.Image, size: int, g: torch.Generator, scale=(0.08, 1.0)) -> torch.Tensor:
    """One random resized crop of a decoded PIL image as (3, size, size) float in [0, 1] (the explorer's)."""
    return to_unit(resized_crop(img, sample_crop(img.width, img.height, g, scale), size, img.size))


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (on whatever device x is: the loader ships uint8, 4x fewer bytes)."""
    return x.float().div_(255.0)


class TwoCrops(torch.utils.data.Dataset):
    """(crop1, crop2, label): two random resized crops (3, size, size) uint8 of one image.

    Indexed by (epoch, i) (what EpochSampler yields; persistent workers learn the epoch from the key) or by i
    (epoch 0). Crops are seeded by (seed, epoch, i), so a resumed run sees the same crops. decode:
      'fast'   the boxes are drawn from the image's header, then a JPEG is decoded only as far as both need
               (decode.load_for_crops);
      'device' a JPEG is not decoded here: the item is (its bytes, boxes (2, 4), label), and DeviceDecoder
               decodes and crops the batch on the GPU (other formats, and JPEGs with an EXIF rotation, which
               nvJPEG would not apply, are cropped here, as 'fast');
      'full'   every file decoded in full and resized with PIL (the reference the loader benchmark compares with).
    Multi-crop: `local_crops` more crops of `local_size` px (area `local_scale`), drawn after the two, come as a
    fourth item (N, 3, local_size, local_size) ('fast' and 'full' only)."""

    DECODE = ("fast", "device", "full")

    def __init__(self, dataset: Dataset, size: int, seed: int = 0, scale=(0.08, 1.0), decode: str = "fast",
                 local_crops: int = 0, local_size: int = 0, local_scale=(0.05, 0.4)):
        if decode not in self.DECODE:
            raise ValueError(f"decode: expected one of {self.DECODE}, got {decode!r}")
        if local_crops and decode == "device":
            raise ValueError("local_crops: multi-crop is cut in the loader workers; use decode fast")
        self.dataset, self.size, self.seed, self.scale, self.decode = dataset, size, seed, scale, decode
        self.local_crops, self.local_size, self.local_scale = local_crops, local_size, local_scale

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]):
        epoch, i = key if isinstance(key, tuple) else (0, key)
        g = key_generator(self.seed, epoch, i)
        state = g.get_state()
        plan: dict = {}

        def boxes(w: int, h: int) -> tuple[int, int]:
            g.set_state(state)  # a skipped unusable file does not shift the next file's draws
            plan["full"], plan["boxes"] = (w, h), [sample_crop(w, h, g, self.scale) for _ in range(2)]
            plan["local"] = [sample_crop(w, h, g, self.local_scale) for _ in range(self.local_crops)]
            return decode_size(w, h, plan["boxes"] + plan["local"], self.size)

        read = None if self.decode == "full" else (lambda path: load_for_crops(path, boxes, self.decode == "device"))
        j, img = self.dataset.usable(i, read=read)
        if "boxes" not in plan:  # decoded without a plan (decode='full', or images held in memory)
            boxes(img.width, img.height)
        if isinstance(img, torch.Tensor) and img.ndim == 1:  # JPEG bytes, for DeviceDecoder
            return img, torch.tensor(plan["boxes"]), self.dataset.labels[j]
        c1, c2 = (resized_crop(img, b, self.size, plan["full"]) for b in plan["boxes"])
        if self.decode == "device":  # not a JPEG: cropped here, shipped as one (2, 3, S, S) payload
            return torch.stack([c1, c2]), torch.tensor(plan["boxes"]), self.dataset.labels[j]
        if self.local_crops:
            local = torch.stack([resized_crop(img, b, self.local_size, plan["full"]) for b in plan["local"]])
            return c1, c2, self.dataset.labels[j], local
        return c1, c2, self.dataset.labels[j]


def collate_encoded(items: list) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """A batch of TwoCrops(decode='device') items: (payloads, boxes, labels); payloads differ in size."""
    payloads, boxes, labels = zip(*items)
    return list(payloads), list(boxes), torch.tensor(labels)


class CudaStreams:
    """The few CUDA stream calls DeviceDecoder makes, in one place (tests pass a recording stand-in)."""

    def current(self, device: torch.device):
        return torch.cuda.current_stream(device)

    def new(self, device: torch.device):
        return torch.cuda.Stream(device)

    def use(self, stream):
        return torch.cuda.stream(stream)

    def sync(self, stream) -> None:
        stream.synchronize()

    def wait(self, consumer, producer) -> None:
        consumer.wait_stream(producer)

    def keep(self, t: torch.Tensor, stream) -> None:
        t.record_stream(stream)


class DeviceDecoder:
    """decode='device': a batch's JPEG bytes decoded on `device` (torchvision.io.decode_jpeg: nvJPEG on CUDA,
    libjpeg on the CPU, where the tests run it), the two boxes of each cut and resized there (bilinear,
    antialiased), as (c1, c2) uint8 (B, 3, S, S). A JPEG the decoder rejects is replaced by the batch's
    previous good image, with a warning and a count (as unusable files are everywhere else).

    Streams on CUDA: torchvision's nvJPEG decodes on a private stream into memory allocated on the caller's
    stream (pytorch/vision#9606), and the hardware JPEG engine of A100/H100-class GPUs may not order its work on
    any stream at all. So the batch is decoded on a stream of its own (its memory belongs to that stream),
    the host waits for that stream to finish (the decode only: the decode stream never waits on the training
    stream, so the queued training work keeps running), the consuming stream waits on it, and each image is
    recorded as used there. NOTE: the cost is one host wait per batch for its decode (not yet measured on a
    GPU); it buys ordering that does not depend on how the decoder uses streams."""

    def __init__(self, size: int, device: torch.device, streams: CudaStreams | None = None):
        self.size, self.device, self.skipped = size, device, 0
        self.streams = streams if streams is not None else CudaStreams() if device.type == "cuda" else None
        self._stream = None

    def _crop(self, img: torch.Tensor, box: list[int]) -> torch.Tensor:
        left, top, cw, ch = box
        x = img[None, :, top:top + ch, left:left + cw].float()
        y = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        return y.round_().clamp_(0, 255)[0].to(torch.uint8)

    def _decode(self, datas: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """Decoded images (None where the decoder rejects one), ready for use on the current stream."""
        if self.streams is None:
            return self._decode_jpegs(datas)
        api = self.streams
        consumer = api.current(self.device)
        if self._stream is None:
            self._stream = api.new(self.device)
        with api.use(self._stream):
            images = self._decode_jpegs(datas)
        api.sync(self._stream)
        api.wait(consumer, self._stream)
        for im in images:
            if im is not None:
                api.keep(im, consumer)
        return images

    def _decode_jpegs(self, datas: list[torch.Tensor]) -> list[torch.Tensor | None]:
        from torchvision.io import ImageReadMode, decode_jpeg

        with warnings.catch_warnings():  # deprecated in torchvision 0.29 in favour of TorchCodec (decode.py)
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                return decode_jpeg(datas, mode=ImageReadMode.RGB, apply_exif_orientation=True, device=self.device)
            except RuntimeError:  # one bad file fails the batch: decode one by one to find it
                out = []
                for d in datas:
                    try:
                        out.append(decode_jpeg(d, mode=ImageReadMode.RGB, apply_exif_orientation=True, device=self.device))
                    except RuntimeError:
                        out.append(None)
                return out

    def __call__(self, payloads: list[torch.Tensor], boxes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        jpeg = [k for k, p in enumerate(payloads) if p.ndim == 1]
        images = dict(zip(jpeg, self._decode([payloads[k] for k in jpeg]))) if jpeg else {}
        crops, last = [], None
        for k, (p, b) in enumerate(zip(payloads, boxes)):
            if k in images and images[k] is None:
                self.skipped += 1
                warnings.warn(f"DeviceDecoder: skipping a JPEG the decoder rejects (batch item {k}); "
                              f"{self.skipped} skipped so far")
            elif k in images:
                last = torch.stack([self._crop(images[k], box) for box in b.tolist()])
            else:
                last = p.to(self.device, non_blocking=True)
            if last is None:
                raise ValueError("DeviceDecoder: no image of this batch could be decoded")
            crops.append(last)
        pairs = torch.stack(crops)
        return pairs[:, 0], pairs[:, 1]


class EpochSampler(torch.utils.data.Sampler):
    """This rank's (epoch, index) keys for one epoch: a seeded permutation cut to whole global batches, the
    first `skip_batches` left out (mid-epoch resume); rank r takes every world-th index."""

    def __init__(self, n: int, global_batch: int, seed: int):
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.epoch, self.skip_batches = 0, 0

    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def __iter__(self):
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch)))
        perm = perm[self.skip_batches * self.global_batch:self.batches_per_epoch() * self.global_batch]
        return iter([(self.epoch, i) for i in perm[dist.rank()::dist.world_size()].tolist()])

    def __len__(self) -> int:
        return (self.batches_per_epoch() - self.skip_batches) * self.global_batch // dist.world_size()


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's draws: the training data order, and the augmented crops of an evaluation's
    probe and fine-tuning (docs/DESIGN.md §5)."""
    return seed * 100_003 + epoch


def loader_workers(num_workers: int = -1) -> int:
    """DataLoader workers per process: `num_workers`, or for -1 the cores this process may use, shared by this
    node's ranks (LOCAL_WORLD_SIZE under torchrun), less one for the training process itself (1 to 16)."""
    if num_workers >= 0:
        return num_workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(16, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1)) - 1))


SHM = "/dev/shm"
PREFETCH_FACTOR = 2  # DataLoader's default: batches each worker keeps ready
JPEG_BYTES = 256 * 1024  # a generous size of one encoded training JPEG (ImageNet's average is about 110 KB)


def shared_memory_free(path: str = SHM) -> int | None:
    """Free bytes of the shared-memory filesystem that DataLoader workers hand batches through (None: none)."""
    import shutil

    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def shared_memory_need(workers: int, batch_size: int, size: int, decode: str = "fast") -> int:
    """Bytes of /dev/shm one process's loader holds at most: PREFETCH_FACTOR batches per worker in flight,
    plus the one being taken (0 without workers: batches are made in the process itself)."""
    if workers == 0:
        return 0
    per_image = JPEG_BYTES if decode == "device" else 2 * 3 * size * size  # two uint8 crops
    return (workers * PREFETCH_FACTOR + 1) * batch_size * per_image


def check_shared_memory(num_workers: int, batch_size: int, size: int, decode: str = "fast") -> None:
    """Refuse, before any data loads, a loader whose workers' batches cannot fit in /dev/shm (64 MB in a
    Docker container by default): workers pass each batch through it, and running out kills the run mid-way
    with a Bus error. A loader keeps PREFETCH_FACTOR batches per worker in flight, plus the one being taken;
    every process of the node (LOCAL_WORLD_SIZE under torchrun) has its own loader on the same /dev/shm."""
    workers = loader_workers(num_workers)
    if workers == 0:
        return
    procs = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    need = procs * shared_memory_need(workers, batch_size, size, decode)
    free = shared_memory_free()
    if free is not None and free < need:
        mb = 1024 * 1024
        raise RuntimeError(f"shared memory: the loaders' {workers} workers per process need about {need / mb:.0f} MB in {SHM} "
                           f"for their batches ({batch_size} images of {size} px per process), but only "
                           f"{free / mb:.0f} MB is free (for {procs} process(es) on this node). In Docker run with --shm-size={max(1, -(-2 * need // 1024 ** 3))}g "
                           f"(or --ipc=host); or lower --num-workers (now {workers}) or the batch per process")


def make_loader(crops: TwoCrops, sampler: EpochSampler, batch_size: int, num_workers: int,
                device: torch.device) -> torch.utils.data.DataLoader:
    """The training loader, built once per run: persistent workers (started once, not every epoch; they get
    the epoch from the sampler's keys), pinned batches on CUDA. num_workers: as loader_workers."""
    workers = loader_workers(num_workers)
    encoded = crops.decode == "device"
    return torch.utils.data.DataLoader(crops, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       drop_last=True, pin_memory=device.type == "cuda" and not encoded,
                                       persistent_workers=workers > 0, collate_fn=collate_encoded if encoded else None,
                                       worker_init_fn=ignore_in_workers)


class DevicePrefetcher:
    """A loader's batches on `device`. On CUDA the next batch is copied on a side stream (from pinned memory)
    while the current step runs; elsewhere each batch is moved when it is taken. Non-tensors pass through."""

    def __init__(self, loader, device: torch.device):
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def _move(self, batch):
        return [t.to(self.device, non_blocking=True) if isinstance(t, torch.Tensor) else t for t in batch]

    def __iter__(self):
        if self.device.type != "cuda":
            for batch in self.loader:
                yield self._move(batch)
            return
        side, main = torch.cuda.Stream(self.device), torch.cuda.current_stream(self.device)
        batches = iter(self.loader)

        def fetch():
            batch = next(batches, None)
            if batch is None:
                return None
            with torch.cuda.stream(side):
                return self._move(batch)

        nxt = fetch()
        while nxt is not None:
            main.wait_stream(side)
            for t in nxt:
                if isinstance(t, torch.Tensor):
                    t.record_stream(main)  # the caching allocator must not reuse it before the step is done
            cur, nxt = nxt, fetch()
            yield cur


__all__ = ["CudaStreams", "DeviceDecoder", "check_shared_memory", "shared_memory_need", "DevicePrefetcher", "EpochSampler", "TwoCrops", "collate_encoded", "key_generator", "decode_size", "loader_workers", "make_loader",
           "random_resized_crop", "resized_crop", "sample_crop", "to_unit"]
