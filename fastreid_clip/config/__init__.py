"""Config: ``add_clip_config`` adds fastreid-clip's keys; ``get_cfg`` returns FastReID's defaults plus ours."""

from .defaults import add_clip_config
from .setup import get_cfg, merge_config_file
from .validate import ConfigValueError, validate_train_config

__all__ = ["add_clip_config", "get_cfg", "merge_config_file", "ConfigValueError", "validate_train_config"]
