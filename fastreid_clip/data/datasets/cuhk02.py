"""CUHK02 (Li & Wang, "Locally Aligned Feature Transforms across Views", CVPR 2013), which FastReID does not have.

Layout of the original release (as torchreid reads it)::

    <root>/cuhk02/Dataset/P1/cam1/<pid>_<n>.png   five camera pairs P1..P5, two views each
                      /P1/cam2/<pid>_<n>.png
                      ...
                      /P5/cam2/...

Identity numbers are unique within a camera pair only, so pids and cameras are namespaced by the pair. Standard
split [torchreid]: P1-P4 train (all images), P5 test with ``cam1`` as query and ``cam2`` as gallery. CLIP-FGDI's
Protocol-1 trains on everything (``DATASETS.COMBINEALL True``: 1,816 identities).
"""

from __future__ import annotations

import os.path as osp
from glob import glob

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset

__all__ = ["CUHK02"]

PAIRS = ("P1", "P2", "P3", "P4", "P5")
TEST_PAIR = "P5"


@DATASET_REGISTRY.register()
class CUHK02(ImageDataset):
    """CUHK02: 1,816 identities in five camera pairs (two images per identity and view).

    Training items use FastReID's string labels (``cuhk02_P1_0001``, camera ``cuhk02_P1_cam1``); query and gallery
    (pair P5) use integer pids and 0-based cameras (``cam1`` -> 0, ``cam2`` -> 1).
    """

    dataset_dir = osp.join("cuhk02", "Dataset")
    dataset_name = "cuhk02"

    def __init__(self, root: str = "datasets", **kwargs):
        self.root = root
        self.data_dir = osp.join(root, self.dataset_dir)
        self.check_before_run([osp.join(self.data_dir, p) for p in PAIRS])
        train, query, gallery = [], [], []
        for pair in PAIRS:
            for cam in (1, 2):
                paths = sorted(glob(osp.join(self.data_dir, pair, f"cam{cam}", "*.png")))
                if not paths:
                    raise RuntimeError(f"CUHK02: no images in {osp.join(self.data_dir, pair, f'cam{cam}')}")
                for path in paths:
                    pid = osp.basename(path).split("_")[0]
                    if pair == TEST_PAIR:
                        (query if cam == 1 else gallery).append((path, int(pid), cam - 1))
                    else:
                        name = f"{self.dataset_name}_{pair}"
                        train.append((path, f"{name}_{pid}", f"{name}_cam{cam}"))
        super().__init__(train, query, gallery, **kwargs)
