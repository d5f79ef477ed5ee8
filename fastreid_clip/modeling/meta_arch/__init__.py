from .clip_baseline import ClipBaseline

__all__ = ["ClipBaseline"]
