"""Compile FastReID's Cython ranker (``fastreid/evaluation/rank_cylib``) inside the installed wheel.

FastReID compiles it lazily at the first evaluation and kills the process when that fails; we build it
once at set-up instead (``make setup`` runs ``python -m fastreid_clip.utils.build_ranker``).
"""

import importlib.util
import os
import subprocess
import sys


def ranker_dir() -> str:
    spec = importlib.util.find_spec("fastreid")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fastreid is not installed: run `pip install --no-deps fastreid==1.4.0` first")
    return os.path.join(list(spec.submodule_search_locations)[0], "evaluation", "rank_cylib")


def is_built() -> bool:
    import fastreid_clip  # noqa: F401  (compat shims before fastreid is imported)

    try:
        from fastreid.evaluation.rank_cylib.rank_cy import evaluate_cy  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> int:
    if is_built():
        print("FastReID Cython ranker: already built")
        return 0
    path = ranker_dir()
    print(f"FastReID Cython ranker: compiling in {path} ...", flush=True)
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=path, check=True,
                   stdout=subprocess.DEVNULL)
    if not is_built():
        print("FastReID Cython ranker: build finished but rank_cy does not import", file=sys.stderr)
        return 1
    print("FastReID Cython ranker: built")
    return 0


if __name__ == "__main__":
    sys.exit(main())
