"""fastreid-clip: CLIP-based ReID methods (CLIP-ReID, PromptSG, CLIP-SCGI, SVLL-ReID, CLIP-FGDI) for FastReID.

Install order (Python 3.11): torch/torchvision first, then this package, then ``fastreid==1.4.0`` with
``--no-deps`` (its wheel pins torch 1.13, which cannot resolve on Python 3.11). ``make setup`` does all of it.
"""

from setuptools import find_packages, setup

# FastReID's real runtime imports (its wheel's metadata pins torch 1.13, so it is installed with --no-deps).
FASTREID_RUNTIME = ["yacs", "tabulate", "termcolor", "tensorboard", "scipy", "scikit-learn", "numpy", "Pillow"]

setup(
    name="fastreid-clip",
    version="0.1.0",
    description="CLIP-based person/vehicle re-identification methods as a FastReID extension",
    packages=find_packages(include=["fastreid_clip", "fastreid_clip.*"]),
    # Cython kernels are compiled in place after installation (python -m fastreid_clip.utils.build_kernels).
    package_data={"fastreid_clip": ["modeling/backbones/model_configs/*.json", "evaluation/*.pyx"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "open_clip_torch>=3.3,<4",
        "safetensors",
        "tqdm",
        "Cython>=3",  # FastReID's Cython ranker and our kernels are compiled once at set-up
        *FASTREID_RUNTIME,
    ],
    extras_require={
        "cpu": ["faiss-cpu"],
        "gpu": ["faiss-gpu-cu12"],
        "test": ["pytest", "onnx", "onnxruntime"],  # onnx/onnxruntime: tools/export_onnx.py and its tests
        "onnx": ["onnx", "onnxruntime"],
    },
)
