"""What a first multi-GPU run (torchrun, NCCL, bf16) would hit, tested on the CPU: caches built by all ranks
without anyone waiting under the watchdog, cache decisions made once for all ranks, float32 losses under
autocast, the bf16/fp16 choice, no host read inside DDP's forward, the nvJPEG stream protocol, EXIF on
device decoding, no_sync under compile, few cuDNN shapes, the backend per device and the shared-memory
check. What only a GPU can show (timings, the real streams) is not tested here."""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from PIL import Image

import collectives
from sassl import dist

# ----------------------------------------------------------------------------- caches under a process group


class SlowStylizer(torch.nn.Module):
    """A stand-in style predictor: a 100-d code of each image's colour statistics, `delay` seconds an image;
    counts the images it embedded."""

    def __init__(self, delay: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.delay, self.count, self.weights_sha256 = delay, 0, "f" * 64

    def embed(self, x, size=None):
        time.sleep(self.delay * len(x))
        self.count += len(x)
        stats = torch.cat([x.mean((2, 3)), x.std((2, 3)), x.amax((2, 3))], 1)  # (N, 9)
        return stats.repeat(1, 12)[:, :100] * self.w


def _bank_worker(rank, world, store, folder, cache, out):
    os.environ["SASSL_CACHE"] = cache
    from sassl.stylizer.bank import load_bank

    trace = collectives.join(rank, world, store, timeout_s=2.0)  # far shorter than the whole build
    try:
        st = SlowStylizer(delay=0.5)
        bank = load_bank(str(folder), st, image_size=32, progress=False)
        first = st.count
        again = load_bank(str(folder), st, image_size=32, progress=False)
        torch.save({"emb": bank.embeddings, "names": bank.meta["names"], "first": first,
                    "second": st.count - first, "again": again.embeddings}, f"{out}.{rank}")
    finally:
        collectives.leave(trace, Path(out).parent / "trace", rank)


@pytest.mark.slow
def test_style_bank_is_sharded_and_no_rank_waits_for_another(tmp_path, style_folder, monkeypatch):
    """8 styles at 0.5 s each: 4 s on one rank, longer than the 2 s collective timeout that the other rank
    would wait in a barrier (the rank-0-first build failed here with a gloo timeout). Sharded, each rank
    embeds 4 images, the bank equals the one-process bank, and a second load embeds nothing."""
    from sassl.stylizer.bank import build_bank

    folder = tmp_path / "styles"
    folder.mkdir()
    for k, p in enumerate(sorted(style_folder.iterdir())[:4]):
        for flip in (False, True):
            img = Image.open(p).convert("RGB")
            (img.transpose(Image.FLIP_LEFT_RIGHT) if flip else img).save(folder / f"{k}{int(flip)}.jpg")
    cache, out = tmp_path / "cache", tmp_path / "out" / "bank"
    out.parent.mkdir()
    mp.spawn(_bank_worker, args=(2, str(tmp_path / "store"), str(folder), str(cache), str(out)), nprocs=2, join=True)
    got = [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]
    assert [g["first"] for g in got] == [4, 4]  # each rank embedded its half
    assert [g["second"] for g in got] == [0, 0]  # then the cache: embedded exactly once
    assert len(list((cache / "banks").iterdir())) == 1
    monkeypatch.setenv("SASSL_CACHE", str(tmp_path / "cache-one"))
    one = build_bank(SlowStylizer(0.0), str(folder), image_size=32, progress=False)
    for g in got:
        torch.testing.assert_close(g["emb"], one.embeddings)
        torch.testing.assert_close(g["again"], one.embeddings)
        assert g["names"] == one.meta["names"]
    collectives.check(tmp_path / "out" / "trace", 2)


def _index_worker(rank, world, store, folder, cache, out):
    os.environ["SASSL_CACHE"] = cache[rank]  # node-local caches, both empty
    import sassl.data.index as index

    walk = index.walk

    def slow_walk(root, **kw):  # a slow filesystem: 0.3 s a folder listed
        time.sleep(0.3 * sum(1 for _ in os.walk(root)))
        return walk(root, **kw)

    index.walk = slow_walk
    trace = collectives.join(rank, world, store, timeout_s=2.0)  # shorter than walking both folders
    try:
        files = index.folder_index(folder)
        (Path(out) / f"files{rank}.json").write_text(json.dumps([str(f) for f in files]))
    finally:
        collectives.leave(trace, Path(out) / "trace", rank)


@pytest.mark.slow
def test_file_index_is_walked_by_all_ranks_with_node_local_caches(tmp_path, jpeg_folder):
    """Walking the 9 folders takes 2.7 s on one rank, more than the 2 s that another would wait in a barrier
    (the rank-0-first walk failed here with a gloo timeout). Now each rank walks one of the two top-level
    folders (1.2 s), both get walk()'s whole list, and each node-local cache gets its copy."""
    from sassl.data.index import walk

    caches = [str(tmp_path / "c0"), str(tmp_path / "c1")]
    mp.spawn(_index_worker, args=(2, str(tmp_path / "store"), str(jpeg_folder), caches, str(tmp_path)),
             nprocs=2, join=True)
    want = [str(jpeg_folder / r) for r in walk(jpeg_folder)]
    for r in range(2):
        assert json.loads((tmp_path / f"files{r}.json").read_text()) == want
        assert len(list((tmp_path / f"c{r}" / "index").iterdir())) == 1
    collectives.check(tmp_path / "trace", 2)


def _features_worker(rank, world, store, folder, cache, out):
    os.environ["SASSL_CACHE"] = cache[rank]
    from sassl.data import get_dataset
    from sassl.eval.features import cached_features

    trace = collectives.join(rank, world, store, timeout_s=20.0)
    try:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        ds = get_dataset(f"imagefolder:{folder}@val")
        f, y, reused = cached_features(net, ds, list(range(20)), 32, batch_size=8, num_workers=0)
        torch.save({"f": f, "y": y, "reused": reused}, Path(out) / f"feats{rank}.pt")
    finally:
        collectives.leave(trace, Path(out) / "trace", rank)


@pytest.mark.slow
def test_cached_features_decided_once_for_all_ranks(tmp_path, jpeg_folder):
    """Rank 0's cache has the features, rank 1's does not: before, rank 0 returned early while rank 1 entered
    the gathers (a timeout here, a hang under NCCL). Now both stream and both get the same features."""
    from sassl.data import get_dataset
    from sassl.eval.features import cached_features

    caches = [str(tmp_path / "c0"), str(tmp_path / "c1")]
    os.environ["SASSL_CACHE"] = caches[0]
    try:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        want, _, _ = cached_features(net, get_dataset(f"imagefolder:{jpeg_folder}@val"), list(range(20)), 32,
                                     batch_size=8, num_workers=0)
    finally:
        del os.environ["SASSL_CACHE"]
    mp.spawn(_features_worker, args=(2, str(tmp_path / "store"), str(jpeg_folder), caches, str(tmp_path)),
             nprocs=2, join=True)
    for r in range(2):
        got = torch.load(tmp_path / f"feats{r}.pt", weights_only=True)
        assert got["reused"] is False
        torch.testing.assert_close(got["f"], want)
    collectives.check(tmp_path / "trace", 2)


def test_weights_are_converted_once_per_node_without_collectives(tmp_path, monkeypatch):
    """node_once: the node's first process builds; another process of the node polls the file (no
    collective), and times out with a message naming the file when nobody writes it; when the first process
    could not write it, the others build their own copy at once."""
    path = tmp_path / "w.json"

    def read(p):
        return json.loads(p.read_text())

    built = []

    def build():
        built.append(1)
        path.write_text(json.dumps({"v": 1}))
        return {"v": 1}

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert dist.node_once(path, build, read) == {"v": 1} and built == [1]
    assert dist.node_once(path, build, read) == {"v": 1} and built == [1]  # read, not built again
    monkeypatch.setenv("LOCAL_RANK", "1")
    path.unlink()
    with pytest.raises(TimeoutError, match="w.json was not written by this node's first process"):
        dist.node_once(path, build, read, timeout_min=0.01, poll_s=0.05)
    assert built == [1]  # the second process never builds

    # a cache folder the first process cannot write (build returns the value, the file never appears): it says so
    # in the node's temporary folder, and the node's other processes build their own copy at once
    def unwritable():
        built.append(2)
        return {"v": 2}
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert dist.node_once(path, unwritable, read) == {"v": 2} and dist.unwritten_marker(path).is_file()
    monkeypatch.setenv("LOCAL_RANK", "1")
    start = time.monotonic()
    assert dist.node_once(path, unwritable, read, timeout_min=5, poll_s=0.05) == {"v": 2}
    assert time.monotonic() - start < 10 and built == [1, 2, 2]  # not the 5-minute timeout
    monkeypatch.setenv("LOCAL_RANK", "0")  # once the file is written, the marker goes
    assert dist.node_once(path, build, read) == {"v": 1} and not dist.unwritten_marker(path).exists()


# ----------------------------------------------------------------------------- numerics under autocast

def _grads_of(loss_fn, *xs, autocast=False):
    """The loss (forward under bf16 autocast when asked) and its gradients (backward outside autocast, as
    train_step runs it)."""
    xs = [x.detach().clone().requires_grad_(True) for x in xs]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = loss_fn(*xs)
    loss.backward()
    return loss.detach(), [x.grad for x in xs]


@pytest.mark.parametrize("which", ["info_nce", "info_nce_queue", "nt_xent", "mocov3", "byol"])
def test_losses_are_float32_under_bf16_autocast(which):
    """Under CPU bf16 autocast (the same bf16 matmul as CUDA's) each loss equals float32 on the same inputs
    within 1e-4 and its gradient within 1e-3 (relative); with bf16 inputs, equals float32 on the same
    bf16-rounded values. Without the float32 guard: about 0.4% on the loss and 2% on the gradient."""
    from sassl.learners.losses import byol_loss, info_nce, nt_xent
    from sassl.learners.mocov3 import mocov3_loss

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 128, generator=g), torch.randn(64, 128, generator=g)
    b = a + 0.5 * b  # positives that agree, as after some training: large logits at T = 0.1
    queue = torch.randn(256, 128, generator=g)
    fn = {"info_nce": lambda q, k: info_nce(q, k, 0.1), "info_nce_queue": lambda q, k: info_nce(q, k, 0.2, queue),
          "nt_xent": lambda q, k: nt_xent(q, k, 0.1), "mocov3": lambda q, k: mocov3_loss(q, k, 0.2),
          "byol": byol_loss}[which]
    for dtype in (torch.float32, torch.bfloat16):
        x1, x2 = a.to(dtype), b.to(dtype)
        want, want_g = _grads_of(fn, x1.float(), x2.float())
        got, got_g = _grads_of(fn, x1, x2, autocast=True)
        assert got.dtype == torch.float32
        assert abs(got.item() - want.item()) <= 1e-4 * abs(want.item()), (dtype, got.item(), want.item())
        for gg, wg in zip(got_g, want_g):
            if wg is None:  # byol's target is detached: no gradient
                assert gg is None
                continue
            err = (gg.float() - wg).norm() / wg.norm()
            tol = 1e-3 if dtype == torch.float32 else 1e-2  # bf16 inputs get bf16 gradients back (rounding)
            assert err < tol, (dtype, err)


def test_precision_auto_per_device(monkeypatch):
    """auto: bf16 on CUDA from compute capability 8.0; V100 (7.0) and T4 (7.5) report bf16 support through
    emulation and get fp16 + GradScaler. On the CPU auto is fp32 (native bf16 or not); bf16 by name warns where the
    CPU lacks avx512_bf16 / amx_bf16 (emulated), not where it has them; fp16 on the CPU is refused."""
    import warnings

    import sassl.precision as prec

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    for cap, want in (((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=cap: c)
        assert prec.resolve_precision("auto", torch.device("cuda", 0)) == want, cap
    assert prec.resolve_precision("fp32", torch.device("cuda", 0)) == "fp32"
    cpu = torch.device("cpu")
    for flags, warns in ((frozenset({"avx2", "avx512f"}), True), (frozenset({"avx512f", "avx512_bf16"}), False),
                         (frozenset({"amx_bf16"}), False)):
        monkeypatch.setattr(prec, "cpu_flags", lambda f=flags: f)
        assert prec.resolve_precision("auto", cpu) == "fp32"
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert prec.resolve_precision("bf16", cpu) == "bf16"
        assert any("emulated" in str(w.message) for w in seen) == warns, flags
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        prec.resolve_precision("fp16", cpu)
    assert prec.autocast_dtype("bf16") == torch.bfloat16 and prec.autocast_dtype("fp32") is None


def test_a_bf16_step_on_the_cpu_keeps_float32_where_it_must():
    """One MoCo v2 step of the same learner on the same batch in fp32 and under CPU bf16 autocast (what
    --precision bf16 runs): the per-image losses float32 and their mean within 2% (measured 1.7%), every weight,
    BatchNorm statistic, EMA target and momentum buffer float32, the EMA's update m * target + (1 - m) * online
    exact in float32 (1e-6). A step whose losses or EMA ran in bf16 fails those. The gradient is bounded loosely,
    as measured: at random init bf16 moves the one-step gradient by 37-38% of its norm (cosine 0.93, batch 8 at
    32 px and batch 32 at 64 px alike): bf16's 8-bit mantissa through 18 BatchNorm layers. Whether that changes
    what training reaches is the paired study's question (docs/pretraining.md), not this test's."""
    import copy

    from sassl.precision import autocast_dtype
    from sassl.training.step import train_step

    base = _tiny_learner()
    runs = {}
    for precision in ("fp32", "bf16"):
        learner = copy.deepcopy(base)
        views, batch = _tiny_batch()
        online = {n: p.detach().clone() for n, p in learner.backbone.named_parameters()}
        target = {n: p.detach().clone() for n, p in learner.target_backbone.named_parameters()}
        opt = torch.optim.SGD(learner.parameters(), lr=0.1, momentum=0.9)
        loss, logs = train_step(learner, views, opt, batch, 0.1, 0.99, autocast_dtype(precision))
        assert logs["per_image"].dtype == torch.float32
        grads = torch.cat([p.grad.flatten() for p in learner.parameters() if p.grad is not None])
        assert all(t.dtype == torch.float32 for t in learner.state_dict().values() if t.is_floating_point())
        assert all(v.dtype == torch.float32 for st in opt.state.values() for v in st.values() if torch.is_tensor(v))
        for n, p in learner.target_backbone.named_parameters():  # the EMA, before the optimiser moved online
            torch.testing.assert_close(p.detach(), 0.99 * target[n] + 0.01 * online[n], atol=1e-6, rtol=0)
        runs[precision] = (float(loss), grads)
    (l32, g32), (l16, g16) = runs["fp32"], runs["bf16"]
    assert abs(l16 - l32) <= 0.02 * abs(l32), (l16, l32)
    assert (g16 - g32).norm() / g32.norm() < 0.5
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.85


# ----------------------------------------------------------------------------- the step under DDP

def _tiny_batch(n=8, size=32, accumulate=1):
    from sassl.training.step import prepare_batch
    from sassl.views import VIEWS, TwoViews

    views = TwoViews(VIEWS["byol"])
    g = torch.Generator().manual_seed(0)
    c1, c2 = torch.rand(n, 3, size, size, generator=g), torch.rand(n, 3, size, size, generator=g)
    return views, prepare_batch(views, c1, c2, torch.Generator().manual_seed(1), accumulate)


def _tiny_learner():
    from sassl.learners import create_learner

    torch.manual_seed(0)
    return create_learner("mocov2", "resnet18", small_images=True, proj_hidden=32, proj_dim=16,
                          pred_hidden=32).to(memory_format=torch.channels_last)  # as build_model makes it


@contextlib.contextmanager
def _ddp_group(tmp_path):
    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        tdist.destroy_process_group()


def test_target_moves_outside_ddp_forward_with_no_host_read(tmp_path):
    """train_step moves the target itself, before DDP's forward, with a Python float (inside DDP's forward a
    tensor momentum went to the GPU and back: a host sync every step). The target equals m * target +
    (1 - m) * online of the weights before the step, written out here (within 1e-7)."""
    from sassl.training.step import train_step

    with _ddp_group(tmp_path):
        learner = _tiny_learner()
        online = {n: p.detach().clone() for n, p in learner.backbone.named_parameters()}
        target = {n: p.detach().clone() for n, p in learner.target_backbone.named_parameters()}
        ddp = torch.nn.parallel.DistributedDataParallel(learner)
        inside, seen = [False], []
        ddp.register_forward_pre_hook(lambda *a: inside.__setitem__(0, True))
        ddp.register_forward_hook(lambda *a: inside.__setitem__(0, False))
        real = learner.update_target

        def spy(m):
            seen.append((inside[0], type(m)))
            return real(m)

        learner.update_target = spy
        forward = learner.forward

        def no_momentum(x1, x2, momentum, x1t=None):
            assert momentum is None  # the learner's forward no longer moves the target
            return forward(x1, x2, momentum, x1t)

        learner.forward = no_momentum
        views, batch = _tiny_batch(accumulate=2)
        opt = torch.optim.SGD(learner.parameters(), lr=0.1)
        train_step(ddp, views, opt, batch, 0.1, 0.9)
        assert seen == [(False, float)]  # once per step, outside DDP's forward, a Python float
        for n, p in learner.target_backbone.named_parameters():
            torch.testing.assert_close(p.detach(), 0.9 * target[n] + 0.1 * online[n], atol=1e-7, rtol=0)


def test_accumulation_keeps_no_sync_under_compile(tmp_path):
    """With accumulate 2, DDP all-reduces once per step (as many bucket calls as a step of one micro-batch), also when the step model is torch.compile's wrapper, which is not a DDP instance (before,
    every micro-batch all-reduced under compile). Counted by a DDP comm hook (gloo, the eager backend)."""
    from sassl.training.step import train_step

    with _ddp_group(tmp_path):
        learner = _tiny_learner()
        ddp = torch.nn.parallel.DistributedDataParallel(learner)
        calls = []

        def hook(state, bucket):
            calls.append(bucket.index())
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut

        ddp.register_comm_hook(None, hook)
        opt = torch.optim.SGD(learner.parameters(), lr=0.01)
        for model in (ddp, torch.compile(ddp, backend="eager")):
            counts = []
            for accumulate in (1, 1, 2):  # the first step builds DDP's buckets (and compiles)
                views, batch = _tiny_batch(n=8, accumulate=accumulate)
                calls.clear()
                train_step(model, views, opt, batch, 0.01, 0.99)
                counts.append(len(calls))
            assert counts[1] > 0 and counts[2] == counts[1], (type(model).__name__, counts)


def test_compile_with_sync_bn_warns():
    from sassl.training import config_from_dict

    with pytest.warns(UserWarning, match="SyncBatchNorm breaks torch.compile"):
        config_from_dict({"compile": True, "sync_bn": True})


# ----------------------------------------------------------------------------- device decoding

class RecordingStreams:
    """A stand-in for the CUDA stream API (sassl.data.loader.CudaStreams) that records the calls in order."""

    def __init__(self):
        self.calls, self.active = [], "consumer"

    def current(self, device):
        return self.active

    def new(self, device):
        self.calls.append("new")
        return "decode"

    @contextlib.contextmanager
    def use(self, stream):
        before, self.active = self.active, stream
        self.calls.append(f"enter {stream}")
        yield
        self.calls.append(f"exit {stream}")
        self.active = before

    def sync(self, stream):
        self.calls.append(f"sync {stream}")

    def wait(self, consumer, producer):
        self.calls.append(f"{consumer} waits {producer}")

    def keep(self, t, stream):
        self.calls.append(f"keep on {stream}")


def _jpeg_bytes(tmp_path, photos, n=3):
    from sassl.data.decode import load_for_crops

    out = []
    for i in range(n):
        p = tmp_path / f"{i}.jpg"
        Image.open(photos[i]).convert("RGB").resize((80, 60)).save(p, quality=90)
        out.append(load_for_crops(p, lambda w, h: (w, h), encoded=True))
    return out


def test_device_decoder_stream_protocol(tmp_path, photos, monkeypatch):
    """Each batch is decoded inside a stream of its own (made once), the host waits for that stream, the
    consuming stream waits on it, and every decoded image is recorded as used there, before any crop."""
    from sassl.data.loader import DeviceDecoder

    streams = RecordingStreams()
    dec = DeviceDecoder(16, torch.device("cpu"), streams=streams)
    real = dec._decode_jpegs

    def decode(datas):
        streams.calls.append(f"decode on {streams.active}")
        return real(datas)

    crop = dec._crop
    monkeypatch.setattr(dec, "_decode_jpegs", decode)
    monkeypatch.setattr(dec, "_crop", lambda img, box: streams.calls.append(f"crop on {streams.active}") or crop(img, box))
    payloads = _jpeg_bytes(tmp_path, photos)
    boxes = [torch.tensor([[0, 0, 40, 30], [10, 5, 50, 50]])] * 3
    for _ in range(2):
        c1, c2 = dec(payloads, boxes)
        assert c1.shape == (3, 3, 16, 16) and c2.dtype == torch.uint8
    one = ["enter decode", "decode on decode", "exit decode", "sync decode", "consumer waits decode"] + \
        ["keep on consumer"] * 3 + ["crop on consumer"] * 6
    assert streams.calls == ["new"] + one + one


def test_exif_rotated_jpeg_is_decoded_on_the_host_for_device_decoding(tmp_path, photos, monkeypatch):
    """A JPEG with EXIF orientation 6 through TwoCrops(decode='device') and DeviceDecoder, with orientation
    dropped as CUDA's decoder drops it, equals the fast path: the file is not sent to the device as bytes
    (before: its crop boxes, drawn on the upright size, did not fit the stored image)."""
    import torchvision.io as tvio

    from sassl.data.loader import DeviceDecoder, TwoCrops, collate_encoded
    from sassl.data.registry import Dataset

    exif = Image.Exif()
    exif[0x0112] = 6
    rotated, plain = tmp_path / "rot.jpg", tmp_path / "plain.jpg"
    img = Image.open(photos[0]).convert("RGB").resize((160, 96))
    img.save(rotated, exif=exif, quality=92)
    img.save(plain, quality=92)
    real = tvio.decode_jpeg

    def as_cuda(data, *args, apply_exif_orientation=False, **kw):  # nvJPEG: no EXIF orientation
        return real(data, *args, apply_exif_orientation=False, **kw)

    monkeypatch.setattr(tvio, "decode_jpeg", as_cuda)
    ds = Dataset("t", [0, 1], ["a", "b"], files=[rotated, plain])
    fast, device = TwoCrops(ds, 32, seed=2), TwoCrops(ds, 32, seed=2, decode="device")
    items = [device[(0, i)] for i in range(2)]
    assert items[0][0].ndim == 4 and items[1][0].ndim == 1  # the rotated one cropped on the host
    c1, c2 = DeviceDecoder(32, torch.device("cpu"))(*collate_encoded(items)[:2])
    for i in range(2):
        f1, f2, _ = fast[(0, i)]
        assert (c1[i].float() - f1.float()).abs().mean() < 2.0 and (c2[i].float() - f2.float()).abs().mean() < 2.0
    assert torch.equal(c1[0], fast[(0, 0)][0])  # exactly the host path


# ----------------------------------------------------------------------------- shapes, backend, shared memory

def test_stylized_and_blurred_subsets_take_few_shapes(stylizer, monkeypatch):
    """Over 50 batches of 512 at p = 0.8 the stylized subset takes dozens of sizes; bucketed (what CUDA with
    cudnn.benchmark gets) at most 4, and the padding changes no real row."""
    import sassl.views as views_mod
    from sassl.stylizer import SASSL
    from sassl.views import VIEWS, TwoViews

    op = SASSL(stylizer, source="batch", p=0.8)
    shapes = {"stylize": set(), "embed": set(), "blur": set()}
    monkeypatch.setattr(stylizer, "forward", lambda x, z: shapes["stylize"].add(tuple(x.shape)) or x)
    monkeypatch.setattr(stylizer, "embed", lambda x, size=None: shapes["embed"].add(tuple(x.shape)) or
                        x.mean((2, 3)).repeat(1, 34)[:, :100])
    blur = views_mod.gaussian_blur
    monkeypatch.setattr(views_mod, "gaussian_blur", lambda x, s, k: shapes["blur"].add(tuple(x.shape)) or blur(x, s, k))
    views = TwoViews(VIEWS["simclr"], sassl=op)
    x = torch.rand(512, 3, 16, 16)
    counts = {}
    for bucket in (1, 32):
        op.bucket = bucket
        monkeypatch.setattr(views_mod, "shape_bucket", lambda device, b=bucket: b)
        for s in shapes.values():
            s.clear()
        for step in range(50):
            prep = views.prepare(x, x, torch.Generator().manual_seed(step))
            views.finish(prep)
        counts[bucket] = {k: len(v) for k, v in shapes.items()}
    assert min(counts[1].values()) >= 15, counts
    assert max(counts[32].values()) <= 4, counts
    # the padded rows are dropped: the same result as unpadded (the real stylizer, a small batch)
    monkeypatch.undo()
    op = SASSL(stylizer, source="batch", p=0.8)
    y = torch.rand(6, 3, 32, 32)
    params = op.sample(6, torch.Generator().manual_seed(0))
    op.bucket = 1
    want, _ = op(y, params)
    op.bucket = 32
    got, _ = op(y, params)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_backend_follows_the_training_device(monkeypatch):
    """With CUDA present and --device cpu the group is gloo (NCCL refuses CPU tensors, and nothing sets a
    GPU); on CUDA, NCCL for CUDA tensors and gloo for CPU ones (object collectives)."""
    got = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: got.setdefault("gpu", d))
    monkeypatch.setattr(tdist, "init_process_group", lambda backend, **kw: got.__setitem__("backend", backend))
    monkeypatch.setattr(dist, "is_dist", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    dist.setup(device="cpu")
    assert got == {"backend": "gloo"}
    dist.setup(device="auto")
    assert got == {"backend": "cpu:gloo,cuda:nccl", "gpu": 1}
    assert dist.backend_for("cuda:0") == "cpu:gloo,cuda:nccl"


def test_small_shared_memory_is_refused_before_any_data_loads(tmp_path, monkeypatch):
    import sassl.data.loader as loader
    import sassl.training.loop as train
    from sassl.training import config_from_dict

    monkeypatch.setattr(loader, "shared_memory_free", lambda path=loader.SHM: 64 * 1024 * 1024)  # Docker's default
    monkeypatch.setattr(train, "get_dataset", lambda *a, **k: pytest.fail("data loaded before the check"))
    cfg = config_from_dict({"name": "shm", "runs_dir": str(tmp_path), "batch_size": 256, "image_size": 224,
                            "num_workers": 8, "device": "cpu"})
    with pytest.raises(RuntimeError, match=r"shared memory: .* --shm-size=\d+g .*--num-workers \(now 8\)"):
        train.pretrain(cfg, progress=False)
    loader.check_shared_memory(0, 256, 224)  # no workers: nothing goes through shared memory
    loader.check_shared_memory(1, 2, 32)  # a small loader fits


# ----------------------------------------------------------------------------- the memory planner

def _measured_peak(cfg, micro: int, per_process: int) -> int:
    """Bytes of tensor storage at the peak of a real steady-state step on the CPU (the second of two): the
    trainer's own prepare_batch (views, SASSL) and train_step on real crops, weights and optimiser state
    included; counted by LiveBytes over real tensors (not process RSS, which carries the libraries)."""
    from sassl.learners import create_learner
    from sassl.plan import LiveBytes, tensor_bytes
    from sassl.stylizer import SASSL, Stylizer
    from sassl.optim import make_optimizer
    from sassl.training.config import learner_settings, local_size
    from sassl.training.step import prepare_batch, train_step
    from sassl.views import VIEWS, TwoViews

    torch.manual_seed(0)
    model = create_learner(cfg.learner, cfg.backbone, cfg.small_images, image_size=cfg.image_size,
                           **learner_settings(cfg)).to(memory_format=torch.channels_last)
    op = None if cfg.style == "none" else SASSL(Stylizer(), source="batch", p=cfg.p,
                                                 embed_size=cfg.embed_size or cfg.image_size)
    views = TwoViews(VIEWS[cfg.views], sassl=op)
    opt = make_optimizer(model, cfg.optimizer, 0.01, cfg.weight_decay)
    held = list(model.parameters()) + list(model.buffers()) + (list(op.stylizer.parameters()) if op else [])
    live = LiveBytes()
    with live:
        for step in range(2):
            if step == 1:
                live.reset_peak()
            g = torch.Generator().manual_seed(step)
            c1, c2 = (torch.randint(0, 256, (per_process, 3, cfg.image_size, cfg.image_size), generator=g,
                                    dtype=torch.uint8) for _ in range(2))
            side = local_size(cfg)  # multi-crop's local crops, when the config has them
            local = torch.randint(0, 256, (per_process, cfg.local_crops, 3, side, side), generator=g,
                                  dtype=torch.uint8) if cfg.local_crops else None
            batch = prepare_batch(views, c1, c2, g, per_process // micro, local)
            loss, _ = train_step(model, views, opt, batch, 0.01, cfg.ema)
            del batch, c1, c2, loss
    return tensor_bytes(held) + live.peak


@pytest.mark.parametrize("backbone, style, learner", [("resnet18", "none", "mocov2"), ("resnet18", "batch", "mocov2"),
                                                     ("vit_tiny", "none", "mocov2"), ("vit_tiny", "batch", "mocov2"),
                                                     ("resnet18", "none", "dino")])
def test_planner_matches_the_measured_peak(backbone, style, learner):
    """The planner's trace (fake tensors, no data) against the tensor bytes a real CPU step holds at its peak,
    within 5% (the issue asks 20%; it comes within 0.1%), for a ResNet and a ViT, with and without SASSL, with
    and without accumulation, and for DINO with two local crops."""
    from sassl.plan import trace_step
    from sassl.training import config_from_dict

    cfg = config_from_dict({"backbone": backbone, "image_size": 32, "batch_size": 16, "small_images": backbone != "vit_tiny",
                            "proj_hidden": 128, "proj_dim": 64, "style": style, "learner": learner}
                           | ({"local_crops": 2} if learner == "dino" else {}))
    for micro in ((16, 8) if backbone == "resnet18" and style == "batch" else (8,)):
        want = _measured_peak(cfg, micro, 16)
        got = trace_step(cfg, micro, 16, None).peak
        assert abs(got - want) <= 0.05 * want, (micro, got / 2 ** 20, want / 2 ** 20)  # measured: within 0.1%


def test_sassl_plan_finds_the_accumulate_that_fits(capsys):
    """`sassl plan` takes pretrain's flags plus --gpus / --gpu-mem: with a GPU memory between the peak of 1 and
    of 4 micro-batches it names the smallest accumulate whose peak fits (and the next smaller does not)."""
    from sassl.cli import main
    from sassl.plan import plan
    from sassl.training import config_from_dict

    flags = ["--backbone", "resnet18", "--small-images", "true", "--image-size", "32", "--batch-size", "32",
             "--proj-hidden", "64", "--proj-dim", "32", "--style", "batch", "--precision", "fp32", "--num-workers", "2"]
    values = {"backbone": "resnet18", "small_images": True, "image_size": 32, "batch_size": 32, "proj_hidden": 64,
              "proj_dim": 32, "style": "batch", "precision": "fp32", "num_workers": 2}
    peak = {a: plan(config_from_dict(values | {"accumulate": a}), 2, 1000)["peak_per_gpu_gb"] for a in (1, 2, 4)}
    assert peak[1] > peak[2] > peak[4]  # fewer images a forward, less memory
    budget = (peak[1] + peak[4]) / 2
    assert main(["plan", *flags, "--gpus", "2", "--gpu-mem", str(budget), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    a = got["accumulate_that_fits"]
    assert got["fits"] is False and a in (2, 4) and got["per_gpu_batch"] == 16
    assert peak[a] <= budget and (a == 2 or peak[2] > budget)
    assert got["ddp_buckets_gb"] > 0 and got["learner_gflops_per_image"] > 0 and got["sassl_gflops_per_stylized_image"] > 0
    assert got["shared_memory_per_node_gb"] > 0
    assert main(["plan", *flags, "--gpus", "2", "--gpu-mem", "80"]) == 0
    text = capsys.readouterr().out
    assert "(fits)" in text and "--accumulate that fits: 1" in text
    assert main(["plan", *flags, "--gpus", "3"]) == 2  # 32 images do not split over 3 GPUs
    assert "batch_size 32 does not split into 3 GPUs" in capsys.readouterr().err


def test_gpu_check_runs_on_the_cpu_and_says_so_without_cuda(tmp_path):
    """The GPU check's code runs here at a small size (everything but the CUDA-only measurements): SASSL
    sync and async give the same losses, device decoding matches the fast path; without CUDA the command says
    so in one line and exits 0, importing neither tqdm, plotly, gradio, papermill nor Jupyter (the lent GPU
    machine has none of them)."""
    import subprocess
    import sys

    from sassl.bench.gpu import run_checks

    out = run_checks("cpu", "resnet18", batch=8, size=64, steps=3, work=tmp_path, stylizer_images=4, stylizer_size=64)
    assert out["ok"] and out["sassl_async"]["max_relative_loss_difference"] == 0.0
    assert out["decode"]["exif_rotated_on_host"] and out["decode"]["max_mean_abs_difference"] < 2.0
    assert set(out["throughput"]) == {"off", "sync", "async", "sassl_overhead"}
    assert set(out["stylizer_images_per_second_64"]) == {"float32", "bfloat16"}
    blocked = ("tqdm", "plotly", "gradio", "papermill", "jupyter", "jupyterlab", "nbformat", "ipykernel", "kaleido")
    script = (  # None in sys.modules: import fails and importlib.util.find_spec says "not installed"
        "import sys, runpy\n"
        f"sys.modules.update(dict.fromkeys({blocked!r}))\n"
        "sys.argv = ['sassl.bench', 'gpu']\n"
        "runpy.run_module('sassl.bench', run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       env=os.environ | {"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "sassl.bench gpu: no CUDA device here; nothing measured"
