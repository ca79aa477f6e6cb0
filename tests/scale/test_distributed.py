"""Data parallel over 2 gloo processes on CPU gives the single-process gradients.

NOTE: SyncBatchNorm is CUDA-only in PyTorch, so on CPU each rank normalises with its own batch
statistics. To compare exactly, batch norm runs in eval mode here; what is tested is the rest of the
distributed path: key/embedding gathering with gradients, rank offsets of the positives, DDP's
gradient averaging and the loss normalisation."""

import pytest
import torch
import torch.multiprocessing as mp

import collectives

from sassl.learners import create_learner



def _model(name):
    torch.manual_seed(0)
    model = create_learner(name, "resnet18", small_images=True, proj_hidden=32, proj_dim=16, pred_hidden=32)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank, world, store, name, x1, x2, out):
    trace = collectives.join(rank, world, store)
    try:
        model = _model(name)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        b = len(x1) // world
        loss, _ = ddp(x1[rank * b:(rank + 1) * b], x2[rank * b:(rank + 1) * b], 0.99)
        loss.backward()
        if rank == 0:
            torch.save(_grads(model), out)
    finally:
        collectives.leave(trace, f"{out}.trace", rank)


@pytest.mark.slow
# BYOL is left out: its loss has no cross-rank term (no gathered keys or negatives), so under DDP it is
# exactly the gradient all-reduce that mocov2's case already checks with the same momentum towers
@pytest.mark.parametrize("name", ["mocov2", "simclr"])
def test_two_gloo_processes_match_single_process(tmp_path, name):
    torch.manual_seed(1)
    x1, x2 = torch.rand(8, 3, 32, 32), torch.rand(8, 3, 32, 32)
    single = _model(name)
    loss, _ = single(x1, x2, 0.99)
    loss.backward()
    want = _grads(single)
    out = tmp_path / "grads.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), name, x1, x2, str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    collectives.check(f"{out}.trace", 2)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6, msg=k)


class _NoBN(torch.nn.Module):
    """Conv -> ReLU -> mean pool, no batch norm, so 2 ranks with half a batch each equal 1 process exactly."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x).relu().mean((2, 3))


def _finetune_target():
    from sassl.data.registry import Dataset
    from sassl.eval.targets import Target

    g = torch.Generator().manual_seed(0)
    y = torch.arange(24) % 2
    x = (0.25 + 0.5 * y[:, None, None, None] + 0.1 * torch.randn(24, 3, 16, 16, generator=g)).clamp(0, 1)
    ds = Dataset("bd", y.tolist(), ["dark", "bright"], images=(x * 255).round().to(torch.uint8))
    return Target("bd", ds.classes, [(ds, list(range(24)))], [(ds, list(range(24)))], y, y, {})


def _finetune_worker(rank, world, store, out):
    from sassl.eval.finetune import train_finetune

    trace = collectives.join(rank, world, store)
    try:
        torch.manual_seed(3)
        net = train_finetune(_NoBN(), 8, _finetune_target(), 16, epochs=2, lr=0.05, batch_size=8, augment=True,
                             num_workers=0)
        if rank == 0:
            torch.save(net.state_dict(), out)
    finally:
        collectives.leave(trace, f"{out}.trace", rank)


@pytest.mark.slow
def test_finetune_under_ddp_equals_one_process(tmp_path):
    """Fine-tuning under DDP on 2 gloo ranks (each its half of every global batch, augmented crops drawn by
    position) ends with the one-process weights."""
    from sassl.eval.finetune import train_finetune

    torch.manual_seed(3)
    want = train_finetune(_NoBN(), 8, _finetune_target(), 16, epochs=2, lr=0.05, batch_size=8, augment=True,
                          num_workers=0).state_dict()
    out = tmp_path / "net.pt"
    mp.spawn(_finetune_worker, args=(2, str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    collectives.check(f"{out}.trace", 2, least=0)  # DDP's all-reduce alone (C++, not traced)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6, msg=k)
