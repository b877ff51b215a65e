"""ONNX export of the folded plan: ``fastsr.export_onnx(model, path, scale=...)``.

The graph is built from the engine's plan (:func:`fastsr.engine.plan.lower`), so what runs in ONNX Runtime,
OpenVINO or OpenCV is the optimized network, not the reference: residual scaling, eval-mode BatchNorm and
both mean shifts are folded into the convs, the global skip is one ``Add``, and every pixel shuffle is a
``DepthToSpace`` in ``CRD`` mode (PyTorch's channel order). ``sub_mean``'s shift is an ``Add`` before the
head conv, so the zero padding stays zero as in the reference.

Contract (as the reference module): input ``image`` is NCHW float32 in [0, rgb_range], output ``output``
is NCHW float32 in (about) [0, rgb_range], not clamped; batch, height and width are dynamic. The same
contract is stored in the file's metadata (``fastsr.*`` keys). MDSR exports one scale per file.

Needs the ``onnx`` package (``pip install "fastsr[export]"``); ``import fastsr`` does not import it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ._files import atomic_write
from ._version import __version__
from .engine.plan import IMAGE, OUT, Plan, lower
from .sources import resolve_model

__all__ = ["export_onnx", "plan_to_onnx", "OPSET", "EXPORT_PRECISIONS"]

# Opset 13: DepthToSpace with mode CRD (since 11) and the ops used here are stable; it is read by every
# peer this project benchmarks (ONNX Runtime, OpenVINO, OpenCV dnn 4.x).
OPSET = 13
EXPORT_PRECISIONS = ("fp32", "fp16")
INPUT_NAME, OUTPUT_NAME = "image", "output"


def _onnx():
    try:
        import onnx
    except ImportError as e:  # an optional extra
        raise ImportError('ONNX export needs the onnx package: pip install "fastsr[export]"') from e
    return onnx


def plan_to_onnx(plan: Plan, *, precision: str = "fp32", dynamic: bool = True,
                 size: tuple[int, int] = (64, 64)) -> Any:
    """The ``onnx.ModelProto`` of ``plan``. fp16 keeps float32 input and output (cast at both ends) and
    computes in fp16 in between. ``dynamic=False`` fixes batch 1 and the input ``size`` (height, width)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    if precision not in EXPORT_PRECISIONS:
        raise ValueError(f"precision must be one of {EXPORT_PRECISIONS}, got {precision!r}")
    half = precision == "fp16"
    np_dtype = "float16" if half else "float32"
    nodes, inits = [], []

    def const(name: str, t: torch.Tensor) -> str:
        inits.append(numpy_helper.from_array(t.detach().cpu().numpy().astype(np_dtype), name))
        return name

    names = {IMAGE: INPUT_NAME}
    if half:
        nodes.append(helper.make_node("Cast", [INPUT_NAME], ["image_fp16"], to=TensorProto.FLOAT16))
        names[IMAGE] = "image_fp16"
    for op in plan.ops():
        src = names[op.src]
        if op.in_shift is not None:
            shifted = f"{op.name}.shifted"
            nodes.append(helper.make_node("Add", [src, const(f"{op.name}.in_shift", op.in_shift.view(1, -1, 1, 1))], [shifted]))
            src = shifted
        p = op.kernel_size // 2
        y = f"{op.name}.conv"
        nodes.append(helper.make_node(
            "Conv", [src, const(f"{op.name}.weight", op.weight), const(f"{op.name}.bias", op.bias)], [y],
            kernel_shape=[op.kernel_size] * 2, pads=[p] * 4, strides=[1, 1], name=op.name))
        if op.relu:
            nodes.append(helper.make_node("Relu", [y], [f"{op.name}.relu"]))
            y = f"{op.name}.relu"
        if op.residual is not None:
            nodes.append(helper.make_node("Add", [y, names[op.residual]], [f"{op.name}.add"]))
            y = f"{op.name}.add"
        if op.shuffle > 1:
            nodes.append(helper.make_node("DepthToSpace", [y], [f"{op.name}.shuffle"], blocksize=op.shuffle, mode="CRD"))
            y = f"{op.name}.shuffle"
        names[op.dst] = y
    final = names[OUT]
    if half:
        nodes.append(helper.make_node("Cast", [final], [OUTPUT_NAME], to=TensorProto.FLOAT))
    else:
        nodes.append(helper.make_node("Identity", [final], [OUTPUT_NAME]))

    c, s = plan.n_colors, plan.scale
    if dynamic:
        in_shape, out_shape = ["batch", c, "height", "width"], ["batch", c, f"height*{s}", f"width*{s}"]
    else:
        h, w = size
        in_shape, out_shape = [1, c, h, w], [1, c, h * s, w * s]
    graph = helper.make_graph(
        nodes, f"fastsr_{plan.arch}_x{s}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, out_shape)],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="fastsr", producer_version=__version__)
    model.ir_version = 8  # readable by ONNX Runtime, OpenVINO and OpenCV 4.x
    meta = {
        "fastsr.arch": plan.arch,
        "fastsr.scale": str(s),
        "fastsr.rgb_range": repr(plan.rgb_range),
        "fastsr.precision": precision,
        "fastsr.contract": json.dumps({
            "input": f"{INPUT_NAME}: NCHW float32, {c} channels (RGB), values in [0, {plan.rgb_range:g}]",
            "output": f"{OUTPUT_NAME}: NCHW float32, height and width x{s}, values in about "
                      f"[0, {plan.rgb_range:g}], not clamped (clamp and round to get 8 bits)",
        }),
    }
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def export_onnx(model: Any, path: str | os.PathLike, *, scale: int | None = None, precision: str = "fp32",
                dynamic: bool = True, size: tuple[int, int] = (64, 64), overwrite: bool = True) -> Path:
    """Write the folded network of ``model`` at ``scale`` to ``path`` as ONNX and return the path.

    ``model``: anything :func:`fastsr.load` reads, a preset name that has bundled weights, a reference
    module (fastsr, EDSR-PyTorch, BasicSR) or an ``optimize``d module. ``scale``: required for MDSR
    (one scale per file); for EDSR it defaults to the model's scale and must match it. ``dynamic``: batch,
    height and width are free (default); ``dynamic=False`` fixes batch 1 and the input ``size`` (height,
    width), which some runtimes compile faster kernels for. The file is written
    to a temporary name beside ``path`` and renamed, so a failure leaves nothing behind; an existing file
    is replaced unless ``overwrite=False`` (then FileExistsError).
    """
    if precision not in EXPORT_PRECISIONS:
        raise ValueError(f"precision must be one of {EXPORT_PRECISIONS}, got {precision!r}")
    for name, flag in (("dynamic", dynamic), ("overwrite", overwrite)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise ValueError(f"size must be (height, width) with two positive ints, got {size!r}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the .onnx file to write")
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: the folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    reference = resolve_model(model, caller="export_onnx()")
    scales = reference.config.scales
    if scale is None:
        if len(scales) > 1:
            raise ValueError(f"the model upscales by {', '.join(f'x{s}' for s in scales)}; "
                             "pass scale= (one scale per ONNX file)")
        scale = scales[0]
    reference.config.require_scale(scale)
    proto = plan_to_onnx(lower(reference, scale), precision=precision, dynamic=dynamic,
                         size=tuple(size)).SerializeToString()
    with atomic_write(path) as f:
        f.write(proto)
    return path
