"""Datasets fastreid-clip adds to FastReID's DATASET_REGISTRY."""

from ..multi_source import SyntheticDomainView  # noqa: F401  (registers SyntheticReIDDomain0..7)
from .cuhk02 import CUHK02
from .dg_small import GRIDTest, PRIDTest, VIPeRTest, iLIDSTest
from .occluded_duke import OccludedDuke

__all__ = ["OccludedDuke", "CUHK02", "GRIDTest", "PRIDTest", "VIPeRTest", "iLIDSTest"]
