from .clip_baseline import ClipBaseline
from .clip_fgdi import ClipFGDI
from .clip_reid import ClipReID
from .clip_scgi import ClipSCGI
from .promptsg import PromptSG
from .svll_reid import SVLLReID  # noqa: F401  (registration)

__all__ = ["ClipBaseline", "ClipFGDI", "ClipReID", "ClipSCGI", "PromptSG"]
