"""Gradio stylization explorer: tune p, alpha, beta, stylized layers and style sources by eye.

    sassl app                  # or: python apps/explorer.py  (127.0.0.1:7860; --host/--port/--share to change)

A thin shell over sassl.explorer.Explorer (the logic, tested without a server). Binds to loopback and
never shares publicly unless asked; uploads are limited in size (10 MB) and type, and a bad image gives
a message in the page, not a dead server."""
from __future__ import annotations

import argparse
import sys

import gradio as gr

from sassl.explorer import CONTENT_SETS, MAX_UPLOAD_BYTES, STYLE_MODES, Explorer
from sassl.stylizer import DEFAULTS


def _controls() -> tuple[list, gr.Button]:
    """The explorer's inputs, in the order its update takes them, and the resample button (inside a column)."""
    content_src = gr.Radio(list(CONTENT_SETS), value="objects", label="content set")
    uploads = gr.File(file_count="multiple", file_types=["image"], label="or upload content images")
    n = gr.Slider(1, 8, value=4, step=1, label="images")
    style = gr.Dropdown(list(STYLE_MODES), value="paintings", label="style source")
    bank_file = gr.Textbox(label="style bank .pt (for 'bank file')")
    style_image = gr.Image(type="filepath", label="style image (for 'style image')")
    offset = gr.Slider(1, 7, value=1, step=1, label="in-batch roll offset")
    p = gr.Slider(0, 1, value=DEFAULTS["p"], step=0.05, label="p")
    with gr.Row():
        a_lo = gr.Slider(0, 1, value=DEFAULTS["alpha"][0], step=0.05, label="alpha min")
        a_hi = gr.Slider(0, 1, value=DEFAULTS["alpha"][1], step=0.05, label="alpha max")
    with gr.Row():
        b_lo = gr.Slider(0, 1, value=DEFAULTS["beta"][0], step=0.05, label="beta min")
        b_hi = gr.Slider(0, 1, value=DEFAULTS["beta"][1], step=0.05, label="beta max")
    layers = gr.Slider(0, 13, value=DEFAULTS["layers"], step=1, label="stylized layers (first k)")
    size = gr.Slider(64, 512, value=256, step=32, label="crop size (px)")
    seed = gr.Number(value=0, precision=0, label="augmentation seed")
    content_seed = gr.Number(value=0, precision=0, label="content pick seed")
    resample = gr.Button("resample", variant="primary", elem_id="resample")
    return [content_src, uploads, n, style, bank_file, style_image, offset, p, a_lo, a_hi, b_lo, b_hi, layers, seed, size,
            content_seed], resample


def build(explorer: Explorer | None = None) -> gr.Blocks:
    ex = explorer or Explorer()

    def update(content_src, uploads, n, style, bank_file, style_image, offset, p, a_lo, a_hi, b_lo, b_hi, layers,
               seed, size, content_seed):
        try:
            files = [f if isinstance(f, str) else f.name for f in (uploads or [])]
            contents = ex.contents(content_src, files, int(n), int(content_seed or 0))
            res = ex.run(contents, style, bank_file=bank_file or None, style_image=style_image, offset=int(offset),
                         p=p, alpha=(a_lo, a_hi), beta=(b_lo, b_hi), layers=int(layers), seed=int(seed), size=int(size))
        except (ValueError, FileNotFoundError) as e:  # bad input: say so, keep the server up
            raise gr.Error(str(e)) from None
        gallery = []
        for r in res.rows:
            gallery += [(r["crop"], "crop"), (r["stylized"], "stylized (beta = 1)"), (r["output"], "SASSL output: " + r["caption"]),
                        (r["left"], "left view"), (r["right"], "right view")]
        text = "\n".join(r["caption"] for r in res.rows)
        return gallery, text, res.figure, res.params

    with gr.Blocks(title="SASSL explorer") as demo:
        gr.Markdown("## SASSL stylization explorer\nPer content image: crop | stylized before interpolation | "
                    "SASSL output | left view | right view (the two-view pipeline, SASSL on the left).")
        with gr.Row():
            with gr.Column(scale=1):
                inputs, resample = _controls()
                (content_src, uploads, n, style, bank_file, style_image, offset, p, a_lo, a_hi, b_lo, b_hi, layers, seed,
                 size, content_seed) = inputs
            with gr.Column(scale=3):
                gallery = gr.Gallery(columns=5, label="crop | stylized | SASSL output | left view | right view",
                                     elem_id="views", height="auto")
                captions = gr.Textbox(label="sampled parameters", lines=4, elem_id="captions")
                with gr.Row():
                    plot = gr.Plot(label="style space")
                    params = gr.JSON(label="SASSL params (replayable)")
        outputs = [gallery, captions, plot, params]
        resample.click(lambda s: int(s or 0) + 1, seed, seed).then(update, inputs, outputs, api_name="resample")
        for ctl in (content_src, n, style, offset, p, a_lo, a_hi, b_lo, b_hi, layers, size, content_seed):
            ctl.change(update, inputs, outputs, api_name=False)
        uploads.upload(update, inputs, outputs, api_name=False)
        style_image.upload(update, inputs, outputs, api_name=False)
        gr.Button("update", visible=False).click(update, inputs, outputs, api_name="update")
        demo.load(update, inputs, outputs, api_name=False)
    return demo


def parser() -> argparse.ArgumentParser:
    """`sassl app`'s flags."""
    ap = argparse.ArgumentParser(prog="sassl app", description="SASSL stylization explorer (Gradio)")
    ap.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--share", action="store_true", help="make a public gradio.live link (off by default)")
    ap.add_argument("--device", default="auto")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    demo = build(Explorer(args.device))
    demo.queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port, share=args.share,
                                                   max_file_size=MAX_UPLOAD_BYTES, show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
