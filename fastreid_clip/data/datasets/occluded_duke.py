"""Occluded-Duke (Miao et al., ICCV 2019), which FastReID does not ship.

Standard layout: ``<root>/Occluded_Duke/{bounding_box_train,query,bounding_box_test}/PPPP_cC_fFFFFFFF.jpg``, the
same naming as DukeMTMC-reID (8 cameras), so FastReID's DukeMTMC parser is reused.
"""

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.dukemtmcreid import DukeMTMC

__all__ = ["OccludedDuke"]


@DATASET_REGISTRY.register()
class OccludedDuke(DukeMTMC):
    """Occluded-Duke: 702 train ids (15,618 images), 1,110 test ids (2,210 query, 17,661 gallery), 8 cameras."""

    dataset_dir = "Occluded_Duke"
    dataset_name = "occludedduke"
