"""Feature files written block by block (``.npy`` or ``.safetensors``) plus a JSON of what each row is.

:class:`FeatureFileWriter` writes each block of rows to disk as it comes: the header is written first with room
reserved for the final row count, and rewritten in place at :meth:`~FeatureFileWriter.close`, so a gallery of any
size never sits in memory. Both formats are the standard ones (``numpy.load`` / ``safetensors.safe_open`` read them,
also memory-mapped); the JSON sidecar (``<name>.json``) lists the image paths and, where known, pids, camera ids and
the query / gallery split, and the images that could not be read.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Dict, Optional

import numpy as np

__all__ = ["FeatureFileWriter", "load_features", "metadata_path", "read_metadata", "write_metadata"]

_NPY_PREFIX = 256  # bytes reserved for the .npy magic + header (a multiple of 64, numpy's alignment)
_ST_HEADER = 1024  # bytes reserved for the safetensors JSON header (a multiple of 8)
TENSOR_NAME = "features"


def metadata_path(features_path: str) -> str:
    """``feats.npy`` / ``feats.safetensors`` -> ``feats.json``."""
    return os.path.splitext(features_path)[0] + ".json"


def _format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".safetensors"):
        raise ValueError(f"feature file '{path}': the name must end in .npy or .safetensors")
    return ext[1:]


class FeatureFileWriter:
    """Append ``[b, D]`` float32 blocks to ``path``; :meth:`close` fixes the row count in the header.

    Writes to ``path + ".part"`` and renames at :meth:`close`, so an interrupted run leaves no file that looks
    complete.
    """

    def __init__(self, path: str, dim: int):
        self.path = path
        self.format = _format(path)
        self.dim = int(dim)
        self.rows = 0
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._tmp = path + ".part"
        self._file = open(self._tmp, "wb")
        self._file.write(self._header(0))

    def _header(self, rows: int) -> bytes:
        if self.format == "npy":
            text = repr({"descr": "<f4", "fortran_order": False, "shape": (rows, self.dim)})
            prefix = b"\x93NUMPY\x01\x00"
            body_len = _NPY_PREFIX - len(prefix) - 2
            body = text.encode("latin1").ljust(body_len - 1) + b"\n"
            return prefix + struct.pack("<H", body_len) + body
        header = {TENSOR_NAME: {"dtype": "F32", "shape": [rows, self.dim], "data_offsets": [0, rows * self.dim * 4]}}
        text = json.dumps(header, separators=(",", ":")).encode()
        return struct.pack("<Q", _ST_HEADER) + text.ljust(_ST_HEADER)  # the format allows trailing-space padding

    def append(self, block) -> None:
        """Write ``[b, D]`` rows (tensor or array; converted to little-endian float32)."""
        if hasattr(block, "detach"):
            block = block.detach().cpu().numpy()
        block = np.ascontiguousarray(block, dtype="<f4")
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ValueError(f"expected [b, {self.dim}] rows, got shape {list(block.shape)}")
        self._file.write(block.tobytes())
        self.rows += block.shape[0]

    def close(self) -> str:
        """Finish the file (header rewritten with the row count) and return its path."""
        self._file.seek(0)
        self._file.write(self._header(self.rows))
        self._file.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        self._file.close()
        if os.path.exists(self._tmp):
            os.remove(self._tmp)


def load_features(path: str, mmap: bool = True) -> np.ndarray:
    """``[N, D]`` float32 features of a ``.npy`` or ``.safetensors`` file (memory-mapped by default)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"feature file '{path}' does not exist")
    if _format(path) == "npy":
        return np.load(path, mmap_mode="r" if mmap else None)
    if mmap:
        return _safetensors_memmap(path)
    from safetensors.numpy import load_file

    tensors = load_file(path)
    if TENSOR_NAME not in tensors:
        raise ValueError(f"feature file '{path}' has no tensor named '{TENSOR_NAME}' (it has {sorted(tensors)})")
    return tensors[TENSOR_NAME]


def _safetensors_memmap(path: str) -> np.memmap:
    """The ``features`` tensor of a safetensors file as a read-only memory map (the format stores each tensor's
    raw little-endian bytes at ``data_offsets`` after an 8-byte length + JSON header)."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    entry = header.get(TENSOR_NAME)
    if entry is None:
        names = sorted(k for k in header if k != "__metadata__")
        raise ValueError(f"feature file '{path}' has no tensor named '{TENSOR_NAME}' (it has {names})")
    if entry["dtype"] != "F32" or len(entry["shape"]) != 2:
        raise ValueError(f"feature file '{path}': tensor '{TENSOR_NAME}' is {entry['dtype']} {entry['shape']}, "
                         f"expected F32 [N, D]")
    start, end = entry["data_offsets"]
    rows, dim = entry["shape"]
    if end - start != rows * dim * 4:
        raise ValueError(f"feature file '{path}': tensor '{TENSOR_NAME}' has {end - start} bytes for shape "
                         f"{entry['shape']}")
    if rows == 0:
        return np.zeros((0, dim), np.float32)
    return np.memmap(path, dtype="<f4", mode="r", offset=8 + header_len + start, shape=(rows, dim))


def write_metadata(features_path: str, meta: Dict[str, Any]) -> str:
    path = metadata_path(features_path)
    with open(path, "w") as f:
        json.dump(meta, f, indent=1)
    return path


def read_metadata(features_path: str) -> Optional[Dict[str, Any]]:
    """The JSON sidecar of a feature file, or None when there is none."""
    path = metadata_path(features_path)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
