"""Style settings -> SASSL ops: the one place a `style` setting (CLI flag, notebook parameter, explorer
choice) is read.

    choice = make_style_op("pbn", stylizer, p=0.8, alpha=(0.1, 0.3), beta=(0.1, 0.3))
    choice.op      # the SASSL module (None for "none")
    choice.used    # where the styles really came from (e.g. the bundled paintings when pbn has no local copy)
    choice.bank    # the StyleBank behind a bank source, else None

A setting is one of STYLE_KEYWORDS, or else names a bank: a style-bank file (.pt, checked against the
stylizer's weights), a folder or image file, or a dataset name (sassl.stylizer.bank.load_bank).
"""
from __future__ import annotations

from dataclasses import dataclass

from sassl.stylizer.augment import DEFAULTS, MODES, SASSL
from sassl.stylizer.bank import StyleBank, load_bank
from sassl.stylizer.networks import Stylizer
from sassl.stylizer.weights import pretrained

STYLE_KEYWORDS = ("none",) + tuple(s for s in MODES if s != "bank")  # none: SASSL off; then the op's other sources


@dataclass
class StyleChoice:
    """What a style setting resolved to."""

    op: SASSL | None        # None when the setting is "none"
    used: str               # where the styles came from, for run configs and captions
    bank: StyleBank | None  # the bank of a bank source


def make_style_op(style: str, stylizer: Stylizer | None = None, p: float = DEFAULTS["p"], alpha=DEFAULTS["alpha"],
                  beta=DEFAULTS["beta"], layers: int = DEFAULTS["layers"], batch_offset: int | None = None, embed_size: int | None = None,
                  image_size: int = 256, progress: bool = True, device=None) -> StyleChoice:
    """The SASSL op a style setting asks for, on the stylizer's device. Without a stylizer, the pretrained
    one is loaded onto `device` when the setting needs it. Bad settings raise ValueError (ranges, p,
    layers: checked once, by SASSL) or FileNotFoundError (a source that is neither a keyword, a file, a
    folder nor a dataset name)."""
    if not isinstance(style, str) or not style:
        raise ValueError(f"style: expected one of {', '.join(STYLE_KEYWORDS)}, a dataset name, a folder or a "
                         f"bank .pt, got {style!r}")
    if style == "none":
        return StyleChoice(None, "none (SASSL off)", None)
    stylizer = stylizer or pretrained(device)
    kw = dict(p=p, alpha=alpha, beta=beta, layers=layers, embed_size=embed_size)
    if style in STYLE_KEYWORDS:
        op = SASSL(stylizer, style, batch_offset=batch_offset, **kw)
        return StyleChoice(op, style, None)
    bank = load_bank(style, stylizer, image_size, progress=progress)
    op = SASSL(stylizer, "bank", bank, **kw).to(next(stylizer.parameters()).device)
    return StyleChoice(op, str(bank.meta.get("source_used", style)), bank)
