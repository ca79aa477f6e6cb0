"""The SASSL augmentation: batched, per-image sampled parameters that can be replayed exactly.

Per image i, with probability p:
    z_i = alpha_i * P(style_i) + (1 - alpha_i) * P(content_i)
    y_i = beta_i * T(content_i, z_i) + (1 - beta_i) * content_i
with alpha, beta ~ U(range). Images not selected are returned unchanged and cost nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from sassl.config import check_range
from sassl.devices import pad_rows, shape_bucket, ship
from sassl.stylizer.bank import StyleBank
from sassl.stylizer.networks import NUM_CIN_LAYERS, STYLE_DIM, Stylizer, check_images

MODES = ("bank", "batch", "noise", "content")  # the op's own modes; a style *setting* is read by sources.py
# SASSL's defaults (the paper, section 4.1): every caller (the op, style settings, run configs, the explorer and
# its app, run comparisons) reads them here
DEFAULTS = {"p": 0.8, "alpha": (0.1, 0.3), "beta": (0.1, 0.3), "layers": NUM_CIN_LAYERS}


def check_settings(p: float, alpha, beta, layers: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """The one check of SASSL's settings, wherever they come from (the op, a run config before any data is
    loaded): p in [0, 1], alpha / beta (min, max) ranges in [0, 1], layers an int in [0, 13]. Returns the
    ranges as floats; ValueError names the setting."""
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"p: must lie in [0, 1], got {p}")
    if not (isinstance(layers, int) and 0 <= layers <= NUM_CIN_LAYERS):
        raise ValueError(f"layers: must be an int in [0, {NUM_CIN_LAYERS}], got {layers!r}")
    return check_range("alpha", alpha), check_range("beta", beta)


def mix(z_style: torch.Tensor, z_content: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """SASSL's embedding blend z = alpha * z_style + (1 - alpha) * z_content. z_*: (N, 100); alpha: (N,)."""
    return alpha[:, None] * z_style + (1 - alpha[:, None]) * z_content


def blend_embeddings(z_style: torch.Tensor, z_content: torch.Tensor, alpha: torch.Tensor,
                     layers: int = NUM_CIN_LAYERS) -> torch.Tensor:
    """Per-layer embeddings (N, 13, 100): alpha-blend for the first `layers` CIN layers, content after.

    z_style, z_content: (N, 100); alpha: (N,).
    """
    z = mix(z_style, z_content, alpha)
    per_layer = z_content[:, None, :].repeat(1, NUM_CIN_LAYERS, 1)
    per_layer[:, :layers] = z[:, None, :]
    return per_layer


def stylize(stylizer: Stylizer, content: torch.Tensor, z_style: torch.Tensor, z_content: torch.Tensor,
            alpha: torch.Tensor, beta: torch.Tensor, layers: int = NUM_CIN_LAYERS) -> torch.Tensor:
    """The pure SASSL function. content (N, 3, H, W) in [0, 1]; z_* (N, 100); alpha, beta (N,).

    Returns beta * T(content, blend(z_style, z_content, alpha)) + (1 - beta) * content.
    """
    s = stylizer(content, blend_embeddings(z_style, z_content, alpha, layers))
    b = beta.to(content.dtype)[:, None, None, None]
    return b * s + (1 - b) * content


@dataclass
class SASSLParams:
    """Everything sampled for one call; pass back as `op(x, params=...)` to replay exactly.

    apply (N,) bool; alpha, beta (N,); style_index (N,) long: bank row for 'bank', batch row for
    'batch' (= (i + offset) mod N), i for 'content', -1 for 'noise'; noise (N, 100) for 'noise'.
    """

    source: str
    apply: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    style_index: torch.Tensor
    noise: torch.Tensor | None = None
    offset: int | None = None

    def to_dict(self) -> dict:
        """Plain python values (for logging and display)."""
        return {"source": self.source, "offset": self.offset, "apply": self.apply.tolist(),
                "alpha": [round(v, 4) for v in self.alpha.tolist()], "beta": [round(v, 4) for v in self.beta.tolist()],
                "style_index": self.style_index.tolist()}


class SASSL(nn.Module):
    """Style augmentation as a batched module (kornia-style: sample, apply a pure function, return params).

    Args:
        stylizer: pretrained Stylizer (kept frozen).
        source: 'bank' (sample a row of `bank` per image), 'batch' (style = batch rolled by an offset),
            'noise' (z_style ~ N(0, noise_std^2)), 'content' (the image is its own style).
        bank: StyleBank or (M, 100) tensor, for source='bank'.
        p: probability of stylizing each image. alpha, beta: (min, max) of the uniform ranges.
        layers: stylize only the first k of the 13 CIN layers (the rest get the content's embedding).
        batch_offset: fixed roll offset for source='batch'; None samples one in [1, N-1] per call.
        embed_size: resize images to this square size before the style predictor; None = as they come.

    The stylized subset's size depends on the draws; on CUDA with cudnn.benchmark it is padded to a multiple
    of `bucket` rows (default: sassl.devices.shape_bucket) so that cuDNN tunes a few shapes, not one per size. The
    padded rows repeat a real one and are dropped: the result does not change.
    """

    bucket: int | None = None  # rows the stylized subset is padded to a multiple of; None: shape_bucket(device)

    def __init__(self, stylizer: Stylizer, source: str = "bank", bank: StyleBank | torch.Tensor | None = None,
                 p: float = DEFAULTS["p"], alpha: tuple[float, float] = DEFAULTS["alpha"],
                 beta: tuple[float, float] = DEFAULTS["beta"], layers: int = DEFAULTS["layers"], batch_offset: int | None = None, noise_std: float = 1.0,
                 embed_size: int | None = None):
        super().__init__()
        if source not in MODES:
            raise ValueError(f"source: expected one of {MODES}, got {source!r}")
        self.alpha_range, self.beta_range = check_settings(p, alpha, beta, layers)
        if batch_offset is not None and (not isinstance(batch_offset, int) or batch_offset < 1):
            raise ValueError(f"batch_offset: must be a positive int or None, got {batch_offset!r}")
        if noise_std <= 0:
            raise ValueError(f"noise_std: must be > 0, got {noise_std}")
        self.source, self.p, self.layers = source, float(p), layers
        self.batch_offset, self.noise_std, self.embed_size = batch_offset, float(noise_std), embed_size
        if source == "bank":
            if bank is None:
                raise ValueError("bank: source='bank' needs a StyleBank (build one with `sassl style-bank build`)")
            emb = bank.embeddings if isinstance(bank, StyleBank) else StyleBank(torch.as_tensor(bank)).embeddings
            self.register_buffer("bank", emb.float().clone(), persistent=False)
        else:
            self.bank = None
        self.stylizer = stylizer.eval().requires_grad_(False)

    def extra_repr(self) -> str:
        return (f"source={self.source}, p={self.p}, alpha={self.alpha_range}, beta={self.beta_range}, "
                f"layers={self.layers}, batch_offset={self.batch_offset}")

    def sample(self, n: int, generator: torch.Generator | None = None) -> SASSLParams:
        """Draw the parameters for a batch of n (on the CPU, so a seed gives the same draw on any device)."""
        g = generator

        def uniform(r):
            return r[0] + (r[1] - r[0]) * torch.rand(n, generator=g)

        apply = torch.rand(n, generator=g) < self.p
        alpha, beta = uniform(self.alpha_range), uniform(self.beta_range)
        offset, noise = None, None
        if self.source == "bank":
            style_index = torch.randint(len(self.bank), (n,), generator=g)
        elif self.source == "batch":
            if n < 2:
                raise ValueError("source='batch' needs a batch of at least 2 images")
            offset = self.batch_offset if self.batch_offset is not None else int(torch.randint(1, n, (1,), generator=g))
            style_index = (torch.arange(n) + offset) % n
        elif self.source == "content":
            style_index = torch.arange(n)
        else:
            style_index = torch.full((n,), -1, dtype=torch.long)
            noise = self.noise_std * torch.randn(n, STYLE_DIM, generator=g)
        return SASSLParams(self.source, apply, alpha, beta, style_index, noise, offset)

    def _selected_draws(self, params: SASSLParams, sel: torch.Tensor, bucket: int = 1) -> dict[str, torch.Tensor]:
        """The index and value tensors that stylizing images `sel` (CPU) needs, computed on the CPU, where
        their sizes are known without waiting for the device: the device gets them in one transfer. Every
        per-image row set is padded to a multiple of `bucket` (pad_rows); the first len(sel) rows are real."""
        need_style = params.style_index[sel]
        sel = pad_rows(sel, bucket)
        style = params.style_index[sel]
        plan = {"sel": sel, "alpha": params.alpha[sel], "beta": params.beta[sel]}
        if self.source == "batch":  # embed each image involved (a content or a lender of style) once
            need = torch.unique(torch.cat([sel, need_style]))
            plan |= {"need": pad_rows(need, bucket), "style_at": torch.searchsorted(need, style),
                     "content_at": torch.searchsorted(need, sel)}
        elif self.source == "bank":
            plan["style"] = style
        elif self.source == "noise":
            plan["noise"] = params.noise[sel]
        return plan

    def _codes(self, xs: torch.Tensor, d: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.source == "batch":
            z = self.stylizer.embed(xs[d["need"]], self.embed_size)
            return z[d["style_at"]], z[d["content_at"]]
        z_content = self.stylizer.embed(xs[d["sel"]], self.embed_size)
        if self.source == "bank":
            return self.bank[d["style"]].to(xs.dtype), z_content
        if self.source == "content":
            return z_content, z_content
        return d["noise"].to(xs.dtype), z_content

    @torch.no_grad()
    def codes(self, x: torch.Tensor, params: SASSLParams, sel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_style, z_content) (len(sel), 100) of the images `sel` (CPU indices) as `params` picks their
        styles; each image is embedded at most once."""
        return self._codes(x.to(self.dtype), ship(self._selected_draws(params, sel.cpu()), x.device))

    @property
    def dtype(self) -> torch.dtype:
        return next(self.stylizer.parameters()).dtype

    @torch.no_grad()
    def forward(self, x: torch.Tensor, params: SASSLParams | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, SASSLParams]:
        """x (N, 3, H, W) in [0, 1] -> (augmented x, params). Given `params`, replays them exactly.

        Nothing here waits for the device: the draws and the indices are made on the CPU and shipped in one
        transfer, the range check of x is asynchronous on CUDA."""
        check_images(x, "x", min_side=self.stylizer.transformer.min_side)
        n = len(x)
        params = self.sample(n, generator) if params is None else params
        if len(params.apply) != n or params.source != self.source:
            raise ValueError(f"params: sampled for {len(params.apply)} images from source {params.source!r}, "
                             f"got {n} images for source {self.source!r}")
        sel = params.apply.nonzero().squeeze(1)
        if len(sel) == 0:
            return x, params
        bucket = self.bucket or shape_bucket(x.device)
        d = ship(self._selected_draws(params, sel, bucket), x.device)
        xs = x.to(self.dtype)
        z_style, z_content = self._codes(xs, d)
        y = stylize(self.stylizer, xs[d["sel"]], z_style, z_content, d["alpha"].to(self.dtype), d["beta"].to(self.dtype),
                    self.layers)
        n = len(sel)  # the real rows; the rest is padding
        return x.index_copy(0, d["sel"][:n], y[:n].to(x.dtype)), params


__all__ = ["SASSL", "SASSLParams", "MODES", "blend_embeddings", "check_settings", "mix", "stylize"]
