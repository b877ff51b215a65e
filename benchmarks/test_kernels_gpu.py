"""GPU kernel micro-benchmarks: fastsr's 3x3 NHWC conv vs cuDNN on the body convs' shapes (F = 64 and 256),
in TFLOP/s and as a fraction of the device's bf16 dense roofline. Every tile config the autotune would
time (``candidate_configs``: the tile shapes, each with the unrolled tap loop and the flattened K loop) is
checked against cuDNN's result and timed in fp16; in bf16 the shape-picked config and its flattened form.
Timed with triton.testing.do_bench (median, p20 / p80) after warm-up; skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

# Dense bf16 tensor-core peak used as the roofline: DESIGN.md's measured ~800 TFLOP/s on the H100.
BF16_ROOFLINE_TFLOPS = 800.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("feats", [64, 256])
def test_conv3x3(feats, dtype, record):
    from fastsr.kernels.conv import candidate_configs, conv2d_nhwc, pack_weight
    from triton.testing import do_bench

    n, h, w = 1, 270, 480  # a 1080p frame's LR input at x4
    x = torch.randn(n, h, w, feats, device="cuda", dtype=dtype)
    weight = torch.randn(feats, feats, 3, 3, device="cuda") * 0.05
    bias = torch.randn(feats, device="cuda")
    wp = pack_weight(weight, dtype)
    out = torch.empty_like(x)
    x_cl = x.permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels_last for cuDNN
    w_cl = weight.to(dtype).contiguous(memory_format=torch.channels_last)

    def cudnn():
        F.conv2d(x_cl, w_cl, bias.to(dtype), padding=1).relu_()

    configs = candidate_configs(feats, feats, dtype)
    if dtype != torch.float16:  # each config compiles in seconds: the full set in the goal's dtype only
        configs = {k: v for k, v in configs.items() if k in ("triton", "triton-flat")}
    ref = F.conv2d(x_cl.float(), weight.to(dtype).float(), bias, padding=1).relu()
    candidates = [("cuDNN", cudnn)]
    for cfg_name, cfg in configs.items():
        def ours(cfg=cfg):
            conv2d_nhwc(x, wp, bias, out, ksize=3, relu=True, config=cfg)

        out.zero_()
        ours()
        torch.testing.assert_close(out.permute(0, 3, 1, 2).float(), ref, atol=0.05 * feats**0.5, rtol=0.02,
                                   msg=lambda m, c=cfg_name: f"{c}: {m}")
        candidates.append((f"fastsr {cfg_name}", ours))
    flops = 2 * n * h * w * feats * feats * 9
    group = f"3x3 conv + bias + ReLU, 1x{h}x{w}x{feats}, {str(dtype).split('.')[-1]}"
    for name, fn in candidates:
        p50, p20, p80 = do_bench(fn, quantiles=[0.5, 0.2, 0.8])
        tflops = flops / (p50 * 1e-3) / 1e12
        record(group=group, name=name, median_s=p50 * 1e-3, p20_s=p20 * 1e-3, p80_s=p80 * 1e-3, tflops=tflops,
               roofline_fraction=tflops / BF16_ROOFLINE_TFLOPS, baseline=name == "cuDNN")
