"""A corpus encoded once: square uint8 images, caption token ids, identities, attributes.

Any map-style Dataset whose items are ``{"image": PIL RGB, "caption": str, "identity": int, "attributes": ...}``
(``fastreid_clip.data.synthetic.pretrain_corpus.PretrainCorpus`` or a stand-in) is read once, in index order, by
:func:`encode_corpus` (a DataLoader with workers when asked; items are functions of their index, so the result
does not depend on the workers). Training then gathers batches from memory: rendering and resizing are paid
once, not once per epoch (``N * 3 * S * S`` bytes: 10,000 images at 128x128 take 0.5 GB).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from .transforms import to_square_uint8, tokenize_captions

__all__ = ["EncodedCorpus", "encode_corpus"]


@dataclass
class EncodedCorpus:
    """Attributes:
        images: ``[N, 3, S, S]`` uint8.
        tokens: ``[N, 77]`` int64 CLIP token ids of each item's caption.
        identities: ``[N]`` int64 identity of each item.
        captions: the caption strings.
        attributes: each item's ``attributes`` entry (for zero-shot labels).
    """

    images: torch.Tensor
    tokens: torch.Tensor
    identities: torch.Tensor
    captions: List[str]
    attributes: List[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_identities(self) -> int:
        return int(torch.unique(self.identities).numel())


class _Encoder(Dataset):
    def __init__(self, dataset: Dataset, size: int, mode: str):
        self.dataset, self.size, self.mode = dataset, size, mode

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        for key in ("image", "caption", "identity"):
            if key not in item:
                raise KeyError(f"corpus item {index} has no '{key}' entry (items must be dicts with image, caption, "
                               f"identity, attributes; got {sorted(item)})")
        return (to_square_uint8(item["image"], self.size, self.mode), str(item["caption"]), int(item["identity"]),
                item.get("attributes"))


def _collate(rows):
    images, captions, identities, attributes = zip(*rows)
    return torch.stack(images), list(captions), list(identities), list(attributes)


def encode_corpus(dataset: Dataset, arch: str, image_size: int, mode: str = "stretch", workers: int = 0,
                  context_length: int = 77, progress: bool = False, desc: str = "encode corpus",
                  limit: Optional[int] = None) -> EncodedCorpus:
    """Read every item of ``dataset`` (the first ``limit`` with ``limit``) into an :class:`EncodedCorpus`."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count == 0:
        raise ValueError("the pretraining corpus is empty")
    source = _Encoder(dataset, image_size, mode)
    if limit is not None:
        source = torch.utils.data.Subset(source, range(count))
    loader = DataLoader(source, batch_size=64, shuffle=False, num_workers=workers, collate_fn=_collate)
    images = torch.empty(count, 3, image_size, image_size, dtype=torch.uint8)
    captions: List[str] = []
    identities: List[int] = []
    attributes: List[Any] = []
    from tqdm import tqdm

    done = 0
    with tqdm(total=count, desc=desc, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for batch_images, batch_captions, batch_ids, batch_attrs in loader:
            images[done:done + len(batch_ids)] = batch_images
            done += len(batch_ids)
            captions += batch_captions
            identities += batch_ids
            attributes += batch_attrs
            bar.update(len(batch_ids))
    return EncodedCorpus(images, tokenize_captions(captions, arch, context_length),
                         torch.tensor(identities, dtype=torch.long), captions, attributes)
