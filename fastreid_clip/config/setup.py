"""Loading configs with errors that name the file and the key."""

from __future__ import annotations

import difflib
import os
from typing import List, Sequence

from fastreid.config import CfgNode
from fastreid.config import get_cfg as fastreid_get_cfg

from .defaults import add_clip_config

__all__ = ["get_cfg", "merge_config_file", "ConfigKeyError"]


class ConfigKeyError(KeyError):
    """An unknown config key, with the file it came from and the closest known keys."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


def _all_keys(node: CfgNode, prefix: str = "") -> List[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CfgNode):
            keys.extend(_all_keys(v, full + "."))
    return keys


def _unknown_key_error(cfg: CfgNode, err: Exception, source: str) -> ConfigKeyError:
    message = str(err.args[0]) if err.args else str(err)
    key = message.split(":", 1)[-1].strip()
    close = difflib.get_close_matches(key, _all_keys(cfg), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigKeyError(f"{source}: unknown config key '{key}' ({message}).{hint} "
                          f"Keys must exist in FastReID's defaults or in add_clip_config (docs/config.md).")


def get_cfg() -> CfgNode:
    """FastReID's default config with fastreid-clip's keys added."""
    return add_clip_config(fastreid_get_cfg())


def merge_config_file(cfg: CfgNode, path: str, opts: Sequence[str] = ()) -> CfgNode:
    """``cfg.merge_from_file(path)`` then ``cfg.merge_from_list(opts)``, with clear errors.

    FastReID's ``merge_from_file`` follows ``_BASE_`` chains; an unknown key raises
    :class:`ConfigKeyError` naming the file (or the command line) and the closest known keys.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file '{path}' does not exist")
    try:
        cfg.merge_from_file(path)
    except KeyError as err:
        raise _unknown_key_error(cfg, err, f"config file '{path}' (or one of its _BASE_ files)") from None
    if opts:
        if len(opts) % 2:
            raise ValueError(f"command-line overrides must be KEY VALUE pairs, got an odd list: {list(opts)}")
        try:
            cfg.merge_from_list(list(opts))
        except (KeyError, AssertionError) as err:  # yacs asserts "Non-existent key: X" for overrides
            if isinstance(err, AssertionError) and "Non-existent key" not in str(err):
                raise
            raise _unknown_key_error(cfg, err, "command-line override") from None
    return cfg
