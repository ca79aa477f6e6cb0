"""LARS and the learning-rate / momentum schedules."""
from __future__ import annotations

import math

import torch
import torch.nn as nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017), as in BYOL/SimCLR:
    per parameter, lr_local = trust * ||w|| / ||g + wd * w||; groups with `exclude=True` (biases and
    norm layers) get neither weight decay nor adaptation."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 1e-6, trust: float = 1e-3):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust=trust, exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not group["exclude"]:
                    g = g.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = p.norm(), g.norm()
                    scale = torch.where((w_norm > 0) & (g_norm > 0), group["trust"] * w_norm / g_norm, torch.ones_like(w_norm))
                    g = g * scale
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.clone(g).detach()
                else:
                    buf.mul_(group["momentum"]).add_(g)
                p.add_(buf, alpha=-group["lr"])


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights (decayed, adapted) and biases + norm parameters (exclude=True, no decay)."""
    decay, exempt, seen = [], [], set()
    for module in model.modules():
        norm = isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:  # a weight shared by two modules counts once
                seen.add(id(p))
                (exempt if norm or name == "bias" else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "exclude": False},
            {"params": exempt, "weight_decay": 0.0, "exclude": True}]


def cosine_lr(step: int, total: int, warmup: int, base_lr: float) -> float:
    """Linear warm-up to base_lr over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def cosine_between(step: int, total: int, start: float, end: float) -> float:
    """start at step 0, end at step `total`, on a half cosine between them (DINO's weight-decay schedule: its
    utils.cosine_scheduler without warm-up)."""
    return end + (start - end) * (1 + math.cos(math.pi * min(1.0, step / max(1, total)))) / 2


def set_weight_decay(opt: torch.optim.Optimizer, weight_decay: float) -> None:
    """The decayed group's weight decay (param_groups' first); biases and norm layers stay exempt."""
    for group in opt.param_groups:
        if not group.get("exclude", False):
            group["weight_decay"] = weight_decay


OPTIMIZERS = ("lars", "sgd", "adamw")


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """LARS (biases and norm layers exempt from decay and adaptation), SGD with momentum 0.9, or AdamW
    (MoCo v3's; biases and norm layers exempt from decay). Frozen parameters are left out."""
    groups = param_groups(model, weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
