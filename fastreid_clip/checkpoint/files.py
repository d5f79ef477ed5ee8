"""Checkpoint files that cannot run code, cannot be half-written, and say when they are damaged.

* **Reading** (:func:`read_checkpoint`): ``torch.load(weights_only=True)`` only, so a file holding pickled objects
  other than tensors and plain containers is refused instead of executing them. An empty, truncated or otherwise
  unreadable file raises :class:`CheckpointError` naming the path, its size and what is wrong with it.
* **Content checksum**: every checkpoint fastreid-clip writes carries ``content_sha256``, a SHA-256 over its
  content (every tensor's dtype, shape and bytes, every other value's type and ``repr``, keys in sorted order).
  It is independent of the zip container, so it is recomputed from what was loaded and compared: a file that
  unpickles but whose tensor bytes changed is rejected too. Files without the entry (older versions, other tools)
  load with no check.
* **Atomic writes** (:func:`atomic_torch_save`, :func:`atomic_write_text`): the data goes to a hidden temporary
  file in the same directory, is flushed and ``fsync``-ed, then renamed over the target (``os.replace``), so a kill
  leaves either the old file or the complete new one, never a 0-byte or truncated one.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import uuid
from typing import Any, Callable, Dict, Optional

import torch

__all__ = ["CHECKSUM_KEY", "CheckpointError", "content_digest", "read_checkpoint", "describe_load_error",
           "refused_global", "atomic_torch_save", "atomic_write_text", "atomic_write_bytes", "is_temporary_file"]

CHECKSUM_KEY = "content_sha256"
_TMP_PREFIX = ".tmp-"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, damaged, not a torch file, or holds more than tensors."""


def _feed(h: "hashlib._Hash", obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{str(t.dtype)}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    elif isinstance(obj, dict):
        h.update(b"D%d" % len(obj))
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(b"L%d" % len(obj))
        for item in obj:
            _feed(h, item)
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    else:
        raise TypeError(f"cannot checksum a checkpoint entry of type {type(obj).__name__}")


def content_digest(data: Dict[str, Any]) -> str:
    """SHA-256 (hex) of a checkpoint's content, its own ``content_sha256`` entry left out."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in data.items() if k != CHECKSUM_KEY})
    return h.hexdigest()


def _describe_size(path: str) -> str:
    size = os.path.getsize(path)
    return f"{size:,} bytes"


def read_checkpoint(path: str, what: str = "checkpoint", verify: bool = True) -> Any:
    """Load ``path`` with ``weights_only=True`` and, for a dict with ``content_sha256``, verify it.

    Args:
        path: the file.
        what: how error messages name the file (e.g. ``"checkpoint (MODEL.WEIGHTS)"``).
        verify: check the content checksum when the file records one.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is empty, truncated or not a torch file, holds pickled objects other than
            tensors and plain containers, or its content does not match its checksum.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} '{path}' does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(describe_load_error(path, err, what)) from None
    if verify and isinstance(data, dict) and CHECKSUM_KEY in data:
        recorded = data[CHECKSUM_KEY]
        actual = content_digest(data)
        if recorded != actual:
            raise CheckpointError(f"{what} '{path}' is damaged: its content checksum {actual[:16]}... does not "
                                  f"match the recorded {str(recorded)[:16]}...")
    return data


def refused_global(err: BaseException) -> Optional[str]:
    """The pickled global a ``weights_only`` load refused (e.g. ``"builtins.print"``), or None for other errors."""
    match = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    return match.group(1) if isinstance(err, pickle.UnpicklingError) and match else None


def describe_load_error(path: str, err: BaseException, what: str = "checkpoint") -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words: pickled code, or an empty, damaged or foreign
    file (judged from the file's first bytes and torch's error; nothing is unpickled)."""
    if os.path.getsize(path) == 0:
        return f"{what} '{path}' is empty (0 bytes): it was probably being written when its run was killed"
    name = refused_global(err)
    if name is not None:
        return (f"{what} '{path}' holds pickled objects other than tensors and plain containers (first: {name}), "
                f"which are never unpickled here (torch.load weights_only=True)")
    kind = "a truncated or damaged zip archive" if _looks_like_zip(path) else "not a torch checkpoint"
    text = str(err).strip()
    detail = re.search(r"WeightsUnpickler error: *\n?(.*)", text)
    reason = detail.group(1).strip() if detail else (text.splitlines()[0] if text else "no details")
    return f"{what} '{path}' ({_describe_size(path)}) cannot be read: it is {kind} ({type(err).__name__}: {reason})"


def _looks_like_zip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def is_temporary_file(name: str) -> bool:
    """True for the hidden temporary files :func:`atomic_torch_save` writes (left behind by a kill)."""
    return os.path.basename(name).startswith(_TMP_PREFIX)


def _atomic_write(path: str, write: Callable[[Any], None], mode: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f"{_TMP_PREFIX}{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open(path, "w")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_torch_save(data: Dict[str, Any], path: str, checksum: bool = True) -> None:
    """``torch.save(data)`` to ``path`` atomically; with ``checksum`` the file records ``content_sha256``."""
    if checksum:
        data = dict(data)
        data[CHECKSUM_KEY] = content_digest(data)
    _atomic_write(path, lambda f: torch.save(data, f), "wb")


def atomic_write_text(text: str, path: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    _atomic_write(path, lambda f: f.write(text), "w")


def atomic_write_bytes(data: bytes, path: str) -> None:
    """Write ``data`` to ``path`` atomically (e.g. a serialised safetensors file)."""
    _atomic_write(path, lambda f: f.write(data), "wb")
