"""The training input pipeline: crop boxes as torchvision's, draft decoding, uint8 batches, the device transfer."""
import math

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from sassl.data.decode import ImageDecodeError, load_for_crops, load_rgb
from sassl.data.loader import DevicePrefetcher, TwoCrops, decode_size, loader_workers, sample_crop
from sassl.data.registry import Dataset
from sassl.devices import pack, unpack


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    grid = np.sort(np.concatenate([a, b]))
    cdf = lambda s: np.searchsorted(np.sort(s), grid, side="right") / len(s)  # noqa: E731
    return float(np.abs(cdf(a) - cdf(b)).max())


def _box_stats(boxes, w: int, h: int) -> dict[str, np.ndarray]:
    b = np.array(boxes, dtype=np.float64)
    left, top, cw, ch = b.T
    return {"area": cw * ch / (w * h), "log_ratio": np.log(cw / ch), "cx": (left + cw / 2) / w, "cy": (top + ch / 2) / h}


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.2, 1.0)])
def test_crop_boxes_follow_torchvision_random_resized_crop(scale):
    """Our boxes (drawn before decoding, from a seeded generator) against torchvision's RandomResizedCrop.get_params
    on a 500x375 image: area fraction, log aspect ratio and box centre have the same distributions (KS statistic
    under the 0.1% critical value 1.95 * sqrt(2 / n)), and the same statistic does tell scale (0.08, 1) from
    (0.3, 1)."""
    n, w, h = 4000, 500, 375
    g = torch.Generator().manual_seed(0)
    ours = _box_stats([sample_crop(w, h, g, scale) for _ in range(n)], w, h)
    torch.manual_seed(0)
    img = torch.empty(3, h, w)
    tv = [torchvision.transforms.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3]) for _ in range(n)]
    theirs = _box_stats([(j, i, cw, ch) for i, j, ch, cw in tv], w, h)
    critical = 1.95 * math.sqrt(2 / n)
    for key in ours:
        assert _ks(ours[key], theirs[key]) < critical, key
    other = _box_stats([sample_crop(w, h, g, (0.3, 1.0)) for _ in range(n)], w, h)
    if scale == (0.08, 1.0):
        assert _ks(other["area"], theirs["area"]) > critical


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory, photos):
    """A real photo re-encoded as a 1000x750 JPEG (quality 90), large enough for draft mode to reduce."""
    path = tmp_path_factory.mktemp("jpeg") / "big.jpg"
    Image.open(photos[0]).convert("RGB").resize((1000, 750), Image.BICUBIC).save(path, quality=90)
    return path


def test_jpeg_decoded_only_as_far_as_the_plan_needs(big_jpeg, tmp_path):
    seen = []
    small = load_for_crops(big_jpeg, lambda w, h: seen.append((w, h)) or (120, 90))
    assert seen == [(1000, 750)] and small.size == (125, 94)  # PIL draft, 1/8 scale: the smallest still >= 120 x 90
    full = load_for_crops(big_jpeg, lambda w, h: (600, 400))  # needs more than 1/2 scale: torchvision, full size
    assert isinstance(full, torch.Tensor) and full.dtype == torch.uint8 and full.shape == (3, 750, 1000)
    ref = torch.from_numpy(np.array(load_rgb(big_jpeg))).permute(2, 0, 1)
    assert (full.float() - ref.float()).abs().mean() < 1.0  # both libjpeg: the same pixels, give or take rounding
    # an EXIF rotation: the plan sees the upright size, the image comes back upright
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rotated = tmp_path / "rotated.jpg"
    Image.open(big_jpeg).save(rotated, exif=exif, quality=90)
    seen.clear()
    img = load_for_crops(rotated, lambda w, h: seen.append((w, h)) or (10, 10))
    assert seen == [(750, 1000)] and img.shape == (3, 1000, 750) and load_rgb(rotated).size == (750, 1000)
    with pytest.raises(ImageDecodeError, match="bad.jpg: not a readable image"):
        (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
        load_for_crops(tmp_path / "bad.jpg", lambda w, h: (10, 10))
    assert decode_size(1000, 750, [(0, 0, 500, 300), (10, 10, 250, 600)], 64) == (256, 160)


@pytest.mark.parametrize("size", [64, 224])
def test_fast_crops_match_the_old_path(big_jpeg, tmp_path, size):
    """The same boxes either way (drawn from the full image's size before decoding), so the fast path's crops
    differ from full PIL decoding + PIL resizing only by libjpeg's DCT downscaling (64 px: mostly draft) or
    torchvision's uint8 resize (224 px: mostly full decodes): a few grey levels on average."""
    ds = Dataset("t", [0, 1], ["a", "b"], files=[big_jpeg, big_jpeg])
    fast, full = TwoCrops(ds, size, seed=3), TwoCrops(ds, size, seed=3, decode="full")
    diffs = []
    for key in [(e, i) for e in range(8) for i in range(2)]:
        a, b = fast[key], full[key]
        assert a[0].dtype == torch.uint8 and a[0].shape == (3, size, size) and a[2] == b[2]
        diffs += [(x.float() - y.float()).abs().mean().item() for x, y in zip(a[:2], b[:2])]
    assert np.mean(diffs) < 3.0 and max(diffs) < 8.0, diffs
    assert min(diffs) > 0  # the fast path really decoded or resized differently
    # an unusable file is skipped (counted) and its neighbour's crops use the draws the key gives
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    ds2 = Dataset("t2", [0, 1], ["a", "b"], files=[bad, big_jpeg])
    with pytest.warns(UserWarning, match="skipping unusable image"):
        c1, c2, label = TwoCrops(ds2, size, seed=3)[(0, 0)]
    assert label == 1 and ds2.skipped == {0}
    assert torch.equal(c1, fast[(0, 0)][0]) and torch.equal(c2, fast[(0, 0)][1])  # as if it were file 0


def test_pack_unpack_round_trip():
    parts = {"mask": torch.tensor([True, False, True]), "idx": torch.tensor([4, 0, 2]), "f": torch.rand(3, 4),
             "empty": torch.zeros(0, dtype=torch.long), "scalar": torch.tensor(2.5, dtype=torch.float64),
             "half": torch.rand(5).half()}
    buf, layout = pack(parts)
    assert buf.dtype == torch.uint8 and buf.ndim == 1
    out = unpack(buf.clone(), layout)
    assert out.keys() == parts.keys()
    for k in parts:
        assert out[k].dtype == parts[k].dtype and torch.equal(out[k], parts[k]), k


def test_prefetcher_and_workers(monkeypatch):
    loader = [(torch.arange(4, dtype=torch.uint8), torch.ones(2), 7)]
    out = list(DevicePrefetcher(loader, torch.device("cpu")))
    assert len(out) == 1 and torch.equal(out[0][0], loader[0][0]) and out[0][2] == 7
    assert loader_workers(3) == 3 and loader_workers(0) == 0
    for cores, ranks, want in ((2, 1, 1), (96, 8, 11), (64, 1, 16), (8, 8, 1)):
        monkeypatch.setattr("os.sched_getaffinity", lambda pid, c=cores: set(range(c)), raising=False)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(ranks))
        assert loader_workers(-1) == want, (cores, ranks)


def test_device_decode_matches_the_fast_path(big_jpeg, photos, tmp_path):
    """decode='device': workers ship JPEG bytes and the boxes, DeviceDecoder decodes and crops the batch (here on
    the CPU: the same torchvision call as nvJPEG's, with device='cpu'). Same boxes as the fast path, so the crops
    differ only by the resize (float vs uint8 kernels): under a grey level on average. A PNG is cropped in the
    worker; a truncated JPEG (its header reads, its data does not) is replaced by the batch's previous image."""
    from sassl.data.loader import DeviceDecoder, collate_encoded

    png = tmp_path / "p.png"
    Image.open(photos[1]).convert("RGB").save(png)
    truncated = tmp_path / "t.jpg"
    truncated.write_bytes(big_jpeg.read_bytes()[:20_000])
    ds = Dataset("t", [0, 1, 2, 3], ["a", "b", "c", "d"], files=[big_jpeg, png, big_jpeg, truncated])
    keys = [(2, i) for i in range(4)]
    payloads, boxes, labels = collate_encoded([TwoCrops(ds, 224, seed=5, decode="device")[k] for k in keys])
    assert [p.ndim for p in payloads] == [1, 4, 1, 1] and labels.tolist() == [0, 1, 2, 3]
    decoder = DeviceDecoder(224, torch.device("cpu"))
    with pytest.warns(UserWarning, match="skipping a JPEG the decoder rejects"):
        c1, c2 = decoder(payloads, boxes)
    assert decoder.skipped == 1 and c1.dtype == torch.uint8 and c1.shape == (4, 3, 224, 224)
    fast = TwoCrops(ds, 224, seed=5)
    for k in range(3):
        ref = fast[keys[k]]
        for got, want in ((c1[k], ref[0]), (c2[k], ref[1])):
            assert (got.float() - want.float()).abs().mean() < 1.0, k
    assert torch.equal(c1[3], c1[2]) and torch.equal(c2[3], c2[2])  # the truncated one: its predecessor
