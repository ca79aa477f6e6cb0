"""Fine-tuning: the linear-probe optimiser (SGD + Nesterov 0.9, cosine, no weight decay) over the whole network."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from sassl.eval.knn import extract_features
from sassl.eval.linear import random_crops, scores
from sassl.views import IMAGENET_MEAN, IMAGENET_STD


def finetune(backbone: nn.Module, dim: int, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
             test_y: torch.Tensor, num_classes: int, epochs: int = 20, lr: float = 0.01, batch_size: int = 64,
             seed: int = 0, augment: bool = False) -> dict:
    """Top-1 (and top-5) after training a copy of `backbone` (D = dim features) plus a linear head on
    (train_x, train_y); the caller's backbone is left untouched. Runs on the backbone's device.
    `augment`: random resized crop + flip per image (the paper fine-tunes small targets without)."""
    if len(train_x) < 2:
        raise ValueError(f"finetune: need at least 2 training images, got {len(train_x)}")
    torch.manual_seed(seed)
    dev = next(backbone.parameters()).device
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(copy.deepcopy(backbone), nn.Linear(dim, num_classes)).to(dev).train()
    mean = torch.tensor(IMAGENET_MEAN, device=dev)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD, device=dev)[None, :, None, None]
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=0.0)
    steps = epochs * math.ceil(len(train_x) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in torch.randperm(len(train_x), generator=g).split(batch_size):
                if len(idx) < 2:  # BatchNorm needs two images
                    continue
                x = train_x[idx].to(dev)
                if augment:
                    x = random_crops(x, g)
                loss = F.cross_entropy(net((x - mean) / std), train_y[idx].to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    logits = extract_features(net, test_x)  # eval mode, normalised, batched: the net's output is the logits
    return scores(logits, test_y.cpu())
