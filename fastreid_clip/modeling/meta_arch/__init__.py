from .clip_baseline import ClipBaseline
from .clip_reid import ClipReID

__all__ = ["ClipBaseline", "ClipReID"]
