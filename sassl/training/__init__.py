"""Self-supervised pre-training with or without SASSL: `sassl pretrain` / `pretrain(config_from_dict({...}))`.

Single process needs no launcher; `torchrun --nproc_per_node N -m sassl.cli pretrain ...` runs data
parallel (NCCL on GPUs, gloo on CPU). Every run writes runs/<name>/: config.json (resolved config,
git commit, style source used), metrics.jsonl, checkpoints/last.pt (atomic; each epoch and every
`checkpoint_every` steps) and figures/curves.html (+ .png when kaleido is installed). `resume=True`
continues from the last checkpoint and reproduces the uninterrupted run: data order, crops and
augmentations are drawn from seeds derived from (seed, epoch, step), not from global RNG state.

One job per file: config.py (the settings and their validation), step.py (batch preparation, the step,
precision), run.py (run folder, lock, checkpoints, metrics kept on resume), schedule.py (epochs, time
budget, progress lines), loop.py (the Trainer and `pretrain`). Other modules import config and step.
"""
from sassl.training.config import PretrainConfig, config_from_dict
from sassl.training.loop import pretrain

__all__ = ["PretrainConfig", "config_from_dict", "pretrain"]
