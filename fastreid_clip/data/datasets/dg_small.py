"""Evaluation versions of the small domain-generalisation targets GRID, VIPeR, PRID and iLIDS.

FastReID registers ``GRID``, ``VIPeR``, ``PRID`` and ``iLIDS`` as training-only sets (no query / gallery). The
classes here (``GRIDTest``, ``VIPeRTest``, ``PRIDTest``, ``iLIDSTest``) read the original releases and build the
usual test protocol of generalisable ReID (torchreid's, used by the DG literature and CLIP-FGDI): half of the
identities form the test set of a split; a split is a seeded random choice.

* **VIPeR** (``VIPeR/cam_a/*.bmp``, ``cam_b/*.bmp``; pid = file-name prefix): 632 identities, 316 test; query =
  their ``cam_a`` images, gallery = their ``cam_b`` images.
* **PRID** (``prid_2011/single_shot/cam_a/person_NNNN.png``, ``cam_b/...``): persons 1-200 appear in both
  cameras; 100 of them are the test identities; query = their ``cam_a`` image, gallery = their ``cam_b`` image plus
  every ``cam_b`` person > 200 (549 distractors).
* **GRID** (``underground_reid/probe/*.jpeg``, ``gallery/*.jpeg``; name ``PPPP_C_...``, pid 0 = distractor):
  250 paired identities, 125 test; query = their probe images, gallery = their gallery images plus the 775
  distractors. Cameras from the file name.
* **iLIDS** (QMUL iLIDS: ``i-LIDS_Pedestrian/Persons/PPPPNNN.jpg``): 119 identities, 60 test; query = one random
  image of each (camera 0), gallery = its other images (camera 1).

Splits: ``split_id`` k in 0..9 draws the test identities with ``numpy.random.default_rng([k, 7])``; the query image
of iLIDS with the same generator. ``DG.SPLITS`` (``single9``: split 9 only, the reference's choice, and the
default; ``avg10``: the multi-target evaluator averages splits 0-9, see
:mod:`fastreid_clip.evaluation.multi_target`). The split *indices* match the reference's meaning, not its exact
identity lists, which torchreid drew unseeded [unverified: the reference's split files are not public].
"""

from __future__ import annotations

import os.path as osp
import re
from glob import glob
from typing import Dict, List, Sequence, Tuple

import numpy as np
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset

__all__ = ["DG_SPLIT_MODES", "NUM_SPLITS", "SmallDGTestSet", "GRIDTest", "VIPeRTest", "PRIDTest", "iLIDSTest",
           "split_ids_of"]

DG_SPLIT_MODES = ("single9", "avg10")
NUM_SPLITS = 10

Item = Tuple[str, int, int]


def split_ids_of(cfg) -> List[int]:
    """The split indices ``DG.SPLITS`` evaluates: ``[9]`` for ``single9``, ``[0..9]`` for ``avg10``."""
    from ...config.validate import ConfigValueError

    mode = cfg.DG.SPLITS
    if mode not in DG_SPLIT_MODES:
        raise ConfigValueError("DG.SPLITS", mode, f"one of {DG_SPLIT_MODES} (single9: split 9, the reference; avg10: "
                                                  f"the mean of the 10 seeded splits)")
    return [9] if mode == "single9" else list(range(NUM_SPLITS))


class SmallDGTestSet(ImageDataset):
    """Base of the four evaluation sets: no training images; query / gallery of split ``split_id``.

    Args:
        root: datasets root.
        split_id: 0..9.
    """

    dataset_dir = ""
    dataset_name = ""

    @staticmethod
    def kwargs_from_config(cfg) -> Dict:
        """``split_id`` from ``DG.SPLIT_ID`` (the multi-target evaluator sets it per split), else ``DG.SPLITS``'s."""
        split = cfg.DG.SPLIT_ID if cfg.DG.SPLIT_ID >= 0 else split_ids_of(cfg)[0]
        return {"split_id": split}

    def __init__(self, root: str = "datasets", split_id: int = 9, **kwargs):
        if isinstance(split_id, bool) or not isinstance(split_id, int) or not 0 <= split_id < NUM_SPLITS:
            raise ValueError(f"{type(self).__name__}: split_id must be in 0..{NUM_SPLITS - 1} (DG.SPLIT_ID), got "
                             f"{split_id!r}")
        self.root = root
        self.split_id = split_id
        self.data_dir = osp.join(root, self.dataset_dir)
        query, gallery = self.build_split(np.random.default_rng([split_id, 7]))
        if not query or not gallery:
            raise RuntimeError(f"{type(self).__name__}: found no test images under {self.data_dir}")
        super().__init__([], query, gallery, **kwargs)

    def build_split(self, rng: np.random.Generator) -> Tuple[List[Item], List[Item]]:
        raise NotImplementedError

    def _images(self, folder: str, pattern: str) -> List[str]:
        path = osp.join(self.data_dir, folder)
        self.check_before_run([path])
        return sorted(glob(osp.join(path, pattern)))

    @staticmethod
    def _choose(ids: Sequence[int], count: int, rng: np.random.Generator) -> set:
        ids = sorted(ids)
        return {ids[i] for i in rng.permutation(len(ids))[:count]}


@DATASET_REGISTRY.register()
class VIPeRTest(SmallDGTestSet):
    dataset_dir = "VIPeR"
    dataset_name = "viper"

    def build_split(self, rng):
        cams = {c: {int(osp.basename(p).split("_")[0]): p for p in self._images(f"cam_{c}", "*.bmp")} for c in "ab"}
        paired = set(cams["a"]) & set(cams["b"])
        test = self._choose(paired, len(paired) // 2, rng)
        query = [(cams["a"][pid], pid, 0) for pid in sorted(test)]
        gallery = [(cams["b"][pid], pid, 1) for pid in sorted(test)]
        return query, gallery


@DATASET_REGISTRY.register()
class PRIDTest(SmallDGTestSet):
    dataset_dir = osp.join("prid_2011", "single_shot")
    dataset_name = "prid"
    num_paired = 200

    def build_split(self, rng):
        def pid_of(path):
            return int(re.search(r"person_(\d+)", osp.basename(path)).group(1))

        cam_a = {pid_of(p): p for p in self._images("cam_a", "*.png")}
        cam_b = {pid_of(p): p for p in self._images("cam_b", "*.png")}
        paired = [pid for pid in cam_a if pid <= self.num_paired and pid in cam_b]
        test = self._choose(paired, len(paired) // 2, rng)
        query = [(cam_a[pid], pid, 0) for pid in sorted(test)]
        gallery = [(cam_b[pid], pid, 1) for pid in sorted(cam_b) if pid in test or pid > self.num_paired]
        return query, gallery


@DATASET_REGISTRY.register()
class GRIDTest(SmallDGTestSet):
    dataset_dir = "underground_reid"
    dataset_name = "grid"

    def build_split(self, rng):
        def parse(path):
            fields = osp.basename(path).split("_")
            return path, int(fields[0]), int(fields[1]) - 1

        probe = [parse(p) for p in self._images("probe", "*.jpeg")]
        gallery_all = [parse(p) for p in self._images("gallery", "*.jpeg")]
        paired = {pid for _, pid, _ in probe if pid > 0} & {pid for _, pid, _ in gallery_all}
        test = self._choose(paired, len(paired) // 2, rng)
        query = [item for item in probe if item[1] in test]
        gallery = [item for item in gallery_all if item[1] in test or item[1] == 0]
        return query, gallery


@DATASET_REGISTRY.register()
class iLIDSTest(SmallDGTestSet):  # noqa: N801  (FastReID's spelling of the dataset)
    dataset_dir = osp.join("i-LIDS_Pedestrian", "Persons")
    dataset_name = "ilids"

    def build_split(self, rng):
        by_pid: Dict[int, List[str]] = {}
        for path in self._images("", "*.jpg"):
            by_pid.setdefault(int(osp.basename(path)[:4]), []).append(path)
        usable = [pid for pid, paths in by_pid.items() if len(paths) >= 2]
        test = self._choose(usable, (len(usable) + 1) // 2, rng)
        query, gallery = [], []
        for pid in sorted(test):
            paths = by_pid[pid]
            pick = int(rng.integers(len(paths)))
            query.append((paths[pick], pid, 0))
            gallery.extend((p, pid, 1) for i, p in enumerate(paths) if i != pick)
        return query, gallery
