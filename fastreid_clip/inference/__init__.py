"""Using a trained model: feature extraction, gallery search, ONNX export, attention pictures (docs/inference.md).

``FeatureExtractor`` needs only torch; ``GalleryIndex`` imports faiss, ``onnx_export`` onnx / onnxruntime, when used.
"""

from .extractor import FeatureExtractor, find_run_checkpoint, load_trained_model

__all__ = ["FeatureExtractor", "GalleryIndex", "find_run_checkpoint", "load_trained_model"]


def __getattr__(name):
    if name == "GalleryIndex":
        from .gallery_index import GalleryIndex

        return GalleryIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
