from .clip_baseline import ClipBaseline
from .clip_reid import ClipReID
from .promptsg import PromptSG
from .svll_reid import SVLLReID  # noqa: F401  (registration)

__all__ = ["ClipBaseline", "ClipReID", "PromptSG"]
