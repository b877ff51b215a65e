"""fastsr's Triton kernels, installed as ``fastsr.kernels``.

Nothing here is imported by ``fastsr`` at import time: the engine imports it lazily, so fastsr works on
machines without a GPU or without Triton. The kernels themselves arrive with the engine.
"""
