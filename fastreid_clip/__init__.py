"""fastreid-clip: CLIP-based person/vehicle re-identification methods as a FastReID extension.

``import fastreid_clip`` first applies the torch-2 / Python-3.11 / CPU fixes FastReID 1.4.0 needs
(:mod:`fastreid_clip.compat`), then registers our backbones, meta-architectures, datasets and evaluator into
FastReID's registries and lets FastReID's ``DefaultTrainer`` train our single-stage configs
(:mod:`fastreid_clip.engine.fastreid_trainer`). In your own FastReID project::

    import fastreid_clip                      # before any fastreid import
    from fastreid_clip import add_clip_config
    cfg = get_cfg(); add_clip_config(cfg); cfg.merge_from_file(...)
"""

from . import compat

compat.apply()

from .utils.logger import forward_to_fastreid_logger  # noqa: E402

forward_to_fastreid_logger()  # our log lines reach FastReID's console and log.txt handlers

from . import data, modeling  # noqa: E402,F401  (registration side effects)
from .config import add_clip_config, get_cfg  # noqa: E402
from .engine import fastreid_trainer  # noqa: E402

fastreid_trainer.apply()  # FastReID's DefaultTrainer builds our schedulers and config-driven datasets

__version__ = "0.1.0"
__all__ = ["add_clip_config", "get_cfg", "FeatureExtractor", "GalleryIndex", "__version__"]


def __getattr__(name):
    """``FeatureExtractor`` and ``GalleryIndex`` (:mod:`fastreid_clip.inference`) load on first use (faiss too)."""
    if name in ("FeatureExtractor", "GalleryIndex"):
        from . import inference

        return getattr(inference, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
