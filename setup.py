"""fastsr: EDSR / MDSR super-resolution as a fast inference engine (PyTorch reference + Triton kernels)."""

import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "fastsr" / "_version.py").read_text()).group(1)

setup(
    name="fastsr",
    version=VERSION,
    description="EDSR / MDSR super-resolution as a fast inference engine",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The Triton kernels live in kernels/ and install as fastsr.kernels (a top-level `kernels` package would
    # clash with PyPI's `kernels`).
    packages=find_packages(include=["fastsr", "fastsr.*"]) + ["fastsr.kernels"],
    package_dir={"fastsr": "fastsr", "fastsr.kernels": "kernels"},
    package_data={"fastsr": ["assets/*.png", "weights/*.safetensors", "weights/*.sha256", "serve_page/*.html",
                             "serve_page/*.js", "serve_page/*.css"]},
    install_requires=[
        # Any torch from 2.11 (the GPU machine) on; install the CPU build first where there is no GPU.
        "torch>=2.11",
        "numpy>=1.24",
        "pillow>=10",
        "safetensors>=0.4",
        "tqdm>=4.60",
        # fastsr.load reads OpenCV's EDSR .pb files on the protobuf runtime (fastsr.sources.opencv_pb builds
        # the schema at run time: no generated code, so any protobuf major version from 4.25 on).
        "protobuf>=4.25",
        "triton>=3.6; platform_system == 'Linux' and platform_machine == 'x86_64'",
    ],
    extras_require={
        # The test command installs the optional parts too, so CI tests the export and runs every peer.
        # OpenCV: the contrib build (a superset of opencv-python-headless: dnn and dnn_superres, which runs
        # OpenCV's model-zoo EDSR files that fastsr.sources.opencv_pb reads). Only one of the two may be
        # installed: both own the same cv2/ folder, and removing either breaks the other.
        # ruff: the linter the test command runs first (its rules: pyproject.toml).
        "test": ["pytest>=8", "pytest-benchmark>=4", "hypothesis>=6", "ruff>=0.6,<0.18", "onnx>=1.14",
                 "onnxruntime>=1.16", "openvino>=2024.0", "opencv-contrib-python-headless>=4.8,<5",
                 "ray[data,serve]>=2.40,<3", "av>=14", "fastapi>=0.110", "uvicorn>=0.29",
                 "python-multipart>=0.0.9", "httpx", "playwright"],
        "export": ["onnx>=1.14"],  # fastsr.export_onnx / fastsr export
        "video": ["av>=14"],  # fastsr.upscale_video (PyAV's wheels bundle FFmpeg with x264, x265, libvpx, ffv1)
        "ray": ["ray[data]>=2.40,<3"],  # fastsr.distributed / fastsr upscale --ray (Ray Data brings pyarrow)
        # fastsr serve: the page and the HTTP API (fastsr serve --ray also needs ray[serve]).
        "serve": ["fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.9"],
        # benchmarks/: the CPU peers (ONNX Runtime, OpenVINO, OpenCV dnn, fed fastsr's ONNX export) and
        # render.py's chart.
        "bench": ["onnx>=1.14", "onnxruntime>=1.16", "openvino>=2024.0", "opencv-contrib-python-headless>=4.8,<5",
                  "matplotlib>=3.7"],
    },
    entry_points={"console_scripts": ["fastsr = fastsr.cli:main"]},
)
