"""SASSL workbench: neural style transfer as a data augmentation for self-supervised learning.

The names a user imports, each from the module that owns it:

    from sassl import PretrainConfig, config_from_dict, pretrain   # pre-training (sassl.training)
    from sassl import EvalConfig, evaluate, load_encoder           # evaluation (sassl.eval)
    from sassl import SASSL, StyleBank, build_bank, make_style_op, pretrained, stylize   # the stylizer
    from sassl import TwoViews, VIEWS, create_backbone, create_learner, LEARNERS, get_dataset

and two functions named as their modules: `from sassl.export import export` (the encoder for torchvision /
timm) and `from sassl.plan import plan` (memory and cost before a launch). They load on first use (PEP 562),
so `import sassl.dist` or `python -m sassl.bench gpu` do not pull in plotting, progress bars or the notebook
stack.
"""
from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sassl")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# public name -> the module that owns it
PUBLIC = {
    **dict.fromkeys(("PretrainConfig", "config_from_dict", "pretrain"), "sassl.training"),
    **dict.fromkeys(("EvalConfig", "evaluate"), "sassl.eval.evaluate"),
    "load_encoder": "sassl.eval.checkpoint",
    **dict.fromkeys(("SASSL", "SASSLParams", "StyleBank", "build_bank", "make_style_op", "pretrained", "stylize"),
                    "sassl.stylizer"),
    **dict.fromkeys(("TwoViews", "VIEWS"), "sassl.views"),
    "create_backbone": "sassl.backbones",
    **dict.fromkeys(("LEARNERS", "create_learner"), "sassl.learners"),
    "get_dataset": "sassl.data",
}
__all__ = ["__version__", *PUBLIC]


def __getattr__(name: str):
    if name not in PUBLIC:
        raise AttributeError(f"module 'sassl' has no attribute {name!r}")
    return getattr(importlib.import_module(PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(PUBLIC))
