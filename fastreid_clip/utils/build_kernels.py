"""Compile our Cython kernels next to their sources (``make setup`` runs ``python -m fastreid_clip.utils.build_kernels``).

Kernels are optional speed-ups with a pure-torch equivalent: without them everything works, only slower (see
each kernel's user). Today: ``fastreid_clip.evaluation.candidate_scan`` (the CPU candidate search of the
chunked evaluator). Building needs Cython (an install requirement) and a C compiler.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile

KERNELS = {"fastreid_clip.evaluation.candidate_scan": os.path.join("evaluation", "candidate_scan.pyx")}
"""Module name -> source file, relative to the ``fastreid_clip`` package directory."""


def package_dir() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def is_built(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def build(modules: list[str]) -> None:
    """Compiles ``modules`` (keys of :data:`KERNELS`) into the package directory.

    Raises:
        RuntimeError: if a compiled module does not import afterwards.
    """
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    root = os.path.dirname(package_dir())  # the directory holding the fastreid_clip package
    with tempfile.TemporaryDirectory() as scratch:
        extensions = [
            Extension(name, [os.path.join(package_dir(), KERNELS[name])], extra_compile_args=["-O3"])
            for name in modules
        ]
        command = build_ext(Distribution({"ext_modules": cythonize(extensions, quiet=True, build_dir=scratch)}))
        command.build_lib = root
        command.build_temp = scratch
        command.ensure_finalized()
        command.run()
    importlib.invalidate_caches()
    broken = [name for name in modules if not is_built(name)]
    if broken:
        raise RuntimeError(f"built {broken} but they do not import")


def main() -> int:
    missing = [name for name in KERNELS if not is_built(name)]
    if not missing:
        print("fastreid_clip kernels: already built")
        return 0
    print(f"fastreid_clip kernels: compiling {', '.join(missing)} ...", flush=True)
    build(missing)
    print("fastreid_clip kernels: built")
    return 0


if __name__ == "__main__":
    sys.exit(main())
