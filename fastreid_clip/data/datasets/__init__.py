"""Datasets fastreid-clip adds to FastReID's DATASET_REGISTRY."""

from .occluded_duke import OccludedDuke

__all__ = ["OccludedDuke"]
