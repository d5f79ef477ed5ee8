"""Config: ``add_clip_config`` adds fastreid-clip's keys; ``get_cfg`` returns FastReID's defaults plus ours."""

from .defaults import add_clip_config
from .setup import get_cfg, merge_config_file

__all__ = ["add_clip_config", "get_cfg", "merge_config_file"]
