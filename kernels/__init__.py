"""fastsr's Triton kernels, installed as ``fastsr.kernels`` (``kernels/conv.py``: the fused NHWC conv).

Nothing here is imported by ``fastsr`` at import time: the engine's triton / interpret backends import it
lazily, so fastsr works on machines without a GPU or without Triton.
"""
