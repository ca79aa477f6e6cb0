import math

import pytest
import torch
import torch.nn.functional as F

from conftest import load_batch
from reference import naive_cin
from sassl.stylizer.networks import (NUM_CIN_LAYERS, ConditionalInstanceNorm, Conv2dSame, StyleTransformer,
                                     check_images)


def test_cin_matches_naive_reference():
    torch.manual_seed(0)
    cin = ConditionalInstanceNorm(5, style_dim=7)
    x, z = torch.randn(3, 5, 6, 4) * 3 + 1, torch.randn(3, 7)
    torch.testing.assert_close(cin(x, z), naive_cin(x, z, cin.gamma, cin.beta, cin.eps), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [7, 8, 15, 16, 33])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_same_matches_tensorflow_rule(size, stride):
    """TF 'SAME': output ceil(in/stride); total pad max((out-1)*s + k - in, 0), the extra pixel bottom/right."""
    torch.manual_seed(0)
    conv = Conv2dSame(2, 3, 3, stride)
    x = torch.randn(1, 2, size, size)
    out_size = math.ceil(size / stride)
    total = max((out_size - 1) * stride + 3 - size, 0)
    ref = F.conv2d(F.pad(x, (total // 2, total - total // 2) * 2), conv.weight, conv.bias, stride)
    y = conv(x)
    assert y.shape[-1] == out_size
    torch.testing.assert_close(y, ref)


@pytest.mark.parametrize("hw", [(8, 8), (13, 21), (64, 50), (97, 96)])
def test_transformer_any_size(hw):
    """Output = naive 1 / (1 + exp(-a)) of the last CIN's activation a (padded to a multiple of 4), cropped to H x W."""
    torch.manual_seed(0)
    t = StyleTransformer().eval()
    x = torch.rand(2, 3, *hw)
    seen = []
    t.expand_norm[2].register_forward_hook(lambda module, args, out: seen.append(out))
    y = t(x, torch.randn(2, 100))
    assert y.shape == x.shape
    a = seen[0]
    assert a.shape[-2:] == tuple(math.ceil(s / 4) * 4 for s in hw)
    torch.testing.assert_close(y, 1 / (1 + torch.exp(-a[:, :, :hw[0], :hw[1]])))
    assert y.max() - y.min() > 0.5  # random-init CIN gives O(1) activations: measured spans 0.91-0.97, not saturated


def test_pretrained_output_spans_the_range_on_real_photos(stylizer, photos):
    """Self-stylized real photos use [0, 1]: measured span 0.998 and 99.2% of values in (0.01, 0.99) at 64 px."""
    x = load_batch(photos[:4], 64)
    with torch.no_grad():
        y = stylizer(x, stylizer.embed(x))
    assert y.max() - y.min() > 0.9
    assert ((y > 0.01) & (y < 0.99)).float().mean() > 0.95  # not pinned at the sigmoid's ends


def test_per_layer_embedding_equals_shared_embedding():
    torch.manual_seed(0)
    t = StyleTransformer().eval()
    x, z = torch.rand(2, 3, 32, 32), torch.randn(2, 100)
    torch.testing.assert_close(t(x, z), t(x, z[:, None].repeat(1, NUM_CIN_LAYERS, 1)))
    z13 = z[:, None].repeat(1, NUM_CIN_LAYERS, 1)
    z13[:, -1] += 1  # the last layer's embedding must matter
    assert not torch.allclose(t(x, z), t(x, z13))


def test_transformer_rejects_bad_embedding_and_tiny_images():
    t = StyleTransformer()
    with pytest.raises(ValueError, match="embedding"):
        t(torch.rand(2, 3, 16, 16), torch.randn(3, 100))
    with pytest.raises(ValueError, match="at least 8"):
        t(torch.rand(1, 3, 4, 16), torch.randn(1, 100))


@pytest.mark.parametrize("bad, msg", [
    (torch.rand(3, 16, 16), r"\(N, 3, H, W\)"),
    (torch.rand(1, 1, 16, 16), r"\(N, 3, H, W\)"),
    (torch.randint(0, 255, (1, 3, 16, 16), dtype=torch.uint8), "float"),
    (torch.rand(1, 3, 16, 16) * 255, r"\[0, 1\]"),
    (torch.rand(1, 3, 16, 16) - 0.5, r"\[0, 1\]"),
])
def test_check_images_errors(bad, msg):
    with pytest.raises(ValueError, match=msg):
        check_images(bad, "content")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_follows_input_cuda(stylizer):
    import copy

    st = copy.deepcopy(stylizer).to("cuda")
    x = torch.rand(2, 3, 32, 32, device="cuda")
    y = st(x, st.embed(x))
    assert y.device.type == "cuda"
    ref = stylizer(x.cpu(), stylizer.embed(x.cpu()))
    torch.testing.assert_close(y.cpu(), ref, atol=2e-3, rtol=0)


def test_bench_stylizer_times_bf16_against_fp32_on_the_real_modules():
    """`python -m sassl.bench stylizer` at toy size: every column filled; bf16's images are near float32's (PSNR
    above 20 dB), and the blend's PSNR is the stylized one's plus 20 log10(1 / 0.2) dB, as the error scales by beta."""
    from sassl.bench.stylizer import bench_stylizer, format_stylizer_table, psnr

    (row,) = bench_stylizer(sizes=(32,), batch=4, min_time=0.05, repeats=2)
    assert row["fp32_img_s"] > 0 and row["bf16_img_s"] > 0 and row["bf16_vs_fp32"] > 0
    assert 20 < row["bf16_psnr_db"] < 80, row  # not equal (bf16 ran), not far
    assert row["bf16_psnr_db_blend"] == pytest.approx(row["bf16_psnr_db"] + 20 * math.log10(5), abs=0.01)
    assert "bf16/fp32" in format_stylizer_table([row])
    a = torch.zeros(1, 3, 4, 4)
    assert psnr(a, a + 0.1) == pytest.approx(20.0) and psnr(a, a) == math.inf
