"""Fine-tuning: the linear-probe optimiser (SGD + Nesterov 0.9, cosine, no weight decay) over the whole network,
images streamed from the target's files (eval.features.EvalImages), data parallel under torchrun."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from sassl import dist
from sassl.interrupt import ignore_in_workers
from sassl.data.loader import epoch_seed
from sassl.eval.features import EvalImages, stream_features
from sassl.eval.linear import scores
from sassl.views import imagenet_normalize


def rank_batches(n: int, batch_size: int, g: torch.Generator) -> list[list[int]]:
    """This rank's share of one epoch: a seeded permutation (the same on every rank) cut into whole global
    batches of `batch_size` (one batch of all n when n is smaller), rank r taking every world-th image of each."""
    perm = torch.randperm(n, generator=g).tolist()
    size = min(batch_size, n)
    world, r = dist.world_size(), dist.rank()
    return [perm[s:s + size][r::world] for s in range(0, n - size + 1, size)]


def train_finetune(backbone: nn.Module, dim: int, target, image_size: int, epochs: int = 20, lr: float = 0.01,
                   batch_size: int = 64, seed: int = 0, augment: bool = False, crop_fraction: float = 1.0,
                   num_workers: int = 2) -> nn.Module:
    """A trained copy of `backbone` (D = dim features) plus a linear head on target's train side; the caller's
    backbone is left untouched. Under torch.distributed: DDP, each rank its share of every global batch of
    `batch_size` (the same steps as one process; batch norm normalises per rank)."""
    n, world = len(target.train_y), dist.world_size()
    if n < 2:
        raise ValueError(f"finetune: need at least 2 training images, got {n}")
    if min(batch_size, n) < 2 * world:
        raise ValueError(f"finetune: batch_size {min(batch_size, n)} leaves fewer than 2 images per process on "
                         f"{world} processes (batch norm needs 2)")
    torch.manual_seed(seed)
    dev = next(backbone.parameters()).device
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(copy.deepcopy(backbone), nn.Linear(dim, target.num_classes)).to(dev).train()
    model = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None) \
        if dist.is_dist() else net
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * max(1, n // batch_size))
    # an encoder evaluated in float16 (sassl.precision.Autocast) scales its loss, as pre-training does
    scaler = torch.amp.GradScaler(dev.type) if getattr(backbone, "dtype", None) == torch.float16 else None
    with torch.enable_grad():
        for epoch in range(epochs):
            images = torch.utils.data.ConcatDataset([
                EvalImages(ds, idx, image_size, crop_fraction, epoch_seed(seed, epoch) if augment else None)
                for ds, idx in target.train])
            loader = torch.utils.data.DataLoader(images, batch_sampler=rank_batches(n, batch_size, g),
                                                 num_workers=num_workers, pin_memory=dev.type == "cuda",
                                                 worker_init_fn=ignore_in_workers)
            for x, y in loader:
                x = imagenet_normalize(x.to(dev, non_blocking=True).float().div_(255))
                loss = F.cross_entropy(model(x), y.to(dev))
                opt.zero_grad(set_to_none=True)
                # DDP averages the ranks' gradients: the global batch's mean loss
                (scaler.scale(loss) if scaler is not None else loss).backward()
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                sched.step()
    return net


def finetune(backbone: nn.Module, dim: int, target, image_size: int, epochs: int = 20, lr: float = 0.01,
             batch_size: int = 64, seed: int = 0, augment: bool = False, crop_fraction: float = 1.0,
             num_workers: int = 2) -> dict:
    """Top-1 (and top-5) on target's test side after train_finetune. `augment`: a random resized crop + flip
    per image and epoch (the paper fine-tunes small targets without); else the evaluation centre crop."""
    net = train_finetune(backbone, dim, target, image_size, epochs, lr, batch_size, seed, augment, crop_fraction,
                         num_workers)
    # eval mode, streamed and sharded like features: the net's output is the logits
    logits = torch.cat([stream_features(net, ds, idx, image_size, num_workers=num_workers, crop_fraction=crop_fraction)[0]
                        for ds, idx in target.test])
    return scores(logits.cpu(), target.test_y.cpu())
