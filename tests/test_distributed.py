"""Data parallel over 2 gloo processes on CPU gives the single-process gradients.

NOTE: SyncBatchNorm is CUDA-only in PyTorch, so on CPU each rank normalises with its own batch
statistics. To compare exactly, batch norm runs in eval mode here; what is tested is the rest of the
distributed path: key/embedding gathering with gradients, rank offsets of the positives, DDP's
gradient averaging and the loss normalisation."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

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
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model = _model(name)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        b = len(x1) // world
        loss, _ = ddp(x1[rank * b:(rank + 1) * b], x2[rank * b:(rank + 1) * b], 0.99)
        loss.backward()
        if rank == 0:
            torch.save(_grads(model), out)
    finally:
        dist.destroy_process_group()


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
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6, msg=k)
