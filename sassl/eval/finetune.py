"""Fine-tuning: the linear-probe optimiser (SGD + Nesterov 0.9, cosine, no weight decay) over the whole network,
images streamed from the target's files (eval.features.EvalImages)."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from sassl.eval.features import EvalImages, stream_features
from sassl.eval.linear import scores
from sassl.views import IMAGENET_MEAN, IMAGENET_STD


def finetune(backbone: nn.Module, dim: int, target, image_size: int, epochs: int = 20, lr: float = 0.01,
             batch_size: int = 64, seed: int = 0, augment: bool = False, crop_fraction: float = 1.0,
             num_workers: int = 2) -> dict:
    """Top-1 (and top-5) on target's test side after training a copy of `backbone` (D = dim features) plus a
    linear head on its train side; the caller's backbone is left untouched. Runs on the backbone's device.
    `augment`: a random resized crop + flip per image and epoch (the paper fine-tunes small targets
    without); else the evaluation centre crop. One process (not DDP)."""
    n = len(target.train_y)
    if n < 2:
        raise ValueError(f"finetune: need at least 2 training images, got {n}")
    torch.manual_seed(seed)
    dev = next(backbone.parameters()).device
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(copy.deepcopy(backbone), nn.Linear(dim, target.num_classes)).to(dev).train()
    mean = torch.tensor(IMAGENET_MEAN, device=dev)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD, device=dev)[None, :, None, None]
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * math.ceil(n / batch_size))
    with torch.enable_grad():
        for epoch in range(epochs):
            images = torch.utils.data.ConcatDataset([
                EvalImages(ds, idx, image_size, crop_fraction, seed * 100_003 + epoch if augment else None)
                for ds, idx in target.train])
            loader = torch.utils.data.DataLoader(images, batch_size=batch_size, num_workers=num_workers,
                                                 sampler=torch.randperm(n, generator=g).tolist(),
                                                 pin_memory=dev.type == "cuda")
            for x, y in loader:
                if len(x) < 2:  # BatchNorm needs two images
                    continue
                x = x.to(dev, non_blocking=True).float().div_(255).sub_(mean).div_(std)
                loss = F.cross_entropy(net(x.contiguous(memory_format=torch.channels_last)), y.to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    # eval mode, streamed: the net's output is the logits
    logits = torch.cat([stream_features(net, ds, idx, image_size, num_workers=num_workers, crop_fraction=crop_fraction)[0]
                        for ds, idx in target.test])
    return scores(logits.cpu(), target.test_y.cpu())
