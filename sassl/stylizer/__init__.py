"""The SASSL stylizer: Ghiasi et al. networks with Magenta's weights, the augmentation, style banks."""
from __future__ import annotations

from sassl.stylizer.augment import DEFAULTS, SASSL, SASSLParams, blend_embeddings, check_settings, mix, stylize
from sassl.stylizer.bank import StyleBank, build_bank, load_bank
from sassl.stylizer.networks import NUM_CIN_LAYERS, STYLE_DIM, StylePredictor, Stylizer, StyleTransformer
from sassl.stylizer.sources import STYLE_KEYWORDS, StyleChoice, make_style_op
from sassl.stylizer.weights import pretrained


__all__ = ["DEFAULTS", "SASSL", "SASSLParams", "NUM_CIN_LAYERS", "STYLE_DIM", "STYLE_KEYWORDS", "StyleBank", "StyleChoice",
           "StylePredictor", "StyleTransformer", "Stylizer", "blend_embeddings", "build_bank", "check_settings", "load_bank",
           "make_style_op", "mix", "pretrained", "stylize"]
