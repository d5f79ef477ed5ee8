"""Zero-shot figures of a pretrained CLIP on held-out images: attribute classification and caption retrieval.

**Attribute classification** (CLIP's zero-shot protocol): for one attribute with classes ``c_1..c_K`` and one
text prompt per class, every prompt is encoded, every image is assigned the class whose L2-normalised prompt
embedding has the largest cosine similarity with its L2-normalised image embedding, and the accuracy against the
label (the attribute function applied to the image's identity attributes) is reported with two chance levels:
``1 / K`` (uniform guessing) and the majority-class rate of the evaluated labels (always answering the most
common class), the higher of which is the bar to beat.

**Image-to-caption retrieval**: the gallery is the caption of every evaluated image (one per image: the
corpus writes a new caption for every image, so an identity has several different ones). Image ``i`` ranks the
gallery by cosine similarity. Recall@k (``R@k``) counts a hit when a caption *of the same identity* is among the
first ``k``: every caption of an identity describes the same person, so retrieving a sibling caption is correct.
The rank is the number of other identities' captions scoring strictly above the best caption of the image's
identity (ties, e.g. an identical sentence written for another identity, count in the image's favour). The
stricter ``own_R@k`` asks for the image's own caption among the first ``k`` (the other captions of its identity
count as competitors). Chance R@1 is ``captions of the identity / all captions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from .transforms import normalize, tokenize_captions

__all__ = ["ZeroShotAttribute", "as_zero_shot_attributes", "attribute_accuracy", "caption_recall",
           "encode_images", "encode_texts", "evaluate_zero_shot", "format_zero_shot"]


@dataclass(frozen=True)
class ZeroShotAttribute:
    """One attribute: its class names, a text prompt per class and ``label(attributes) -> class index``."""

    name: str
    classes: Sequence[str]
    prompts: Sequence[str]
    label: Callable[[Any], int]

    def __post_init__(self):
        if len(self.classes) != len(self.prompts) or len(self.classes) < 2:
            raise ValueError(f"zero-shot attribute '{self.name}': {len(self.classes)} classes and "
                             f"{len(self.prompts)} prompts (need one prompt per class, at least 2 classes)")


_LABEL_NAMES = ("label", "label_of", "class_index", "index_of", "index", "target", "fn", "function")


def _one(name: str, spec: Any) -> ZeroShotAttribute:
    if isinstance(spec, ZeroShotAttribute):
        return spec
    if isinstance(spec, (tuple, list)) and len(spec) == 3:
        return ZeroShotAttribute(name, tuple(spec[0]), tuple(spec[1]), spec[2])
    get = spec.get if isinstance(spec, Mapping) else (lambda key, default=None: getattr(spec, key, default))
    classes, prompts = get("classes"), get("prompts")
    label = next((get(k) for k in _LABEL_NAMES if callable(get(k))), None)
    if classes is None or prompts is None or label is None:
        raise TypeError(f"zero-shot attribute '{name}': expected classes, prompts and a label function, got "
                        f"{type(spec).__name__}")
    return ZeroShotAttribute(str(get("name") or name), tuple(classes), tuple(prompts), label)


def as_zero_shot_attributes(spec: Any) -> List[ZeroShotAttribute]:
    """Normalise what a corpus's ``zero_shot_attributes()`` returns: a mapping ``name -> (classes, prompts, fn)``
    (or objects / dicts with ``classes``, ``prompts`` and a ``label``-like function), or a sequence of such objects
    with a ``name``."""
    if isinstance(spec, Mapping):
        return [_one(str(k), v) for k, v in spec.items()]
    return [_one(str(getattr(s, "name", None) or (s.get("name") if isinstance(s, Mapping) else i)), s)
            for i, s in enumerate(spec)]


def attribute_accuracy(image_features: torch.Tensor, class_features: torch.Tensor,
                       labels: torch.Tensor) -> Dict[str, float]:
    """Zero-shot accuracy of ``[N, E]`` image features against ``[K, E]`` class-prompt features.

    Returns ``accuracy``, ``chance_uniform`` (1/K), ``chance_majority`` (the most common label's rate),
    ``num_classes`` and ``num_images``.
    """
    labels = labels.long().cpu()
    sims = F.normalize(image_features.float(), dim=-1) @ F.normalize(class_features.float(), dim=-1).T
    pred = sims.argmax(dim=-1).cpu()
    k = class_features.shape[0]
    counts = torch.bincount(labels, minlength=k)
    return {"accuracy": float((pred == labels).float().mean()), "chance_uniform": 1.0 / k,
            "chance_majority": float(counts.max()) / max(1, labels.numel()), "num_classes": k,
            "num_images": int(labels.numel())}


def caption_recall(image_features: torch.Tensor, caption_features: torch.Tensor, image_identities: torch.Tensor,
                   caption_identities: torch.Tensor, own_caption: Optional[torch.Tensor] = None,
                   ks: Sequence[int] = (1, 5)) -> Dict[str, float]:
    """Recall@k of image -> caption retrieval over a ``[M, E]`` caption gallery.

    ``R@k``: a caption of the image's identity is among the first ``k`` (rank = number of other identities'
    captions scoring strictly above the best same-identity caption). ``own_R@k`` (with ``own_caption[i]``, the
    gallery row of image ``i``'s own caption): that caption is among the first ``k`` (rank = rows scoring strictly
    above it). Also returns ``num_images``, ``num_captions`` and ``chance_R@1`` (mean share of the image's
    identity in the gallery).
    """
    sims = F.normalize(image_features.float(), dim=-1) @ F.normalize(caption_features.float(), dim=-1).T
    image_identities = image_identities.long().view(-1, 1).cpu()
    same = image_identities == caption_identities.long().view(1, -1).cpu()
    if not bool(same.any(dim=1).all()):
        raise ValueError("caption_recall: an image has no caption of its identity in the gallery")
    best_same = sims.masked_fill(~same, float("-inf")).max(dim=1, keepdim=True).values
    rank = ((sims > best_same) & ~same).sum(dim=1)
    out: Dict[str, float] = {f"R@{k}": float((rank < k).float().mean()) for k in ks}
    if own_caption is not None:
        own = sims.gather(1, own_caption.long().view(-1, 1))
        own_rank = (sims > own).sum(dim=1)
        out.update({f"own_R@{k}": float((own_rank < k).float().mean()) for k in ks})
    out["num_images"] = int(sims.shape[0])
    out["num_captions"] = int(sims.shape[1])
    out["chance_R@1"] = float(same.float().mean(dim=1).mean())
    return out


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    import contextlib

    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@torch.no_grad()
def _encode_in_batches(encode: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, batch_size: int,
                       device, autocast_dtype: Optional[torch.dtype]) -> torch.Tensor:
    out = []
    for start in range(0, inputs.shape[0], batch_size):
        with _autocast(device, autocast_dtype):
            out.append(encode(inputs[start:start + batch_size].to(device)).float().cpu())
    return torch.cat(out)


def encode_images(pair, images_uint8: torch.Tensor, batch_size: int = 256, device=torch.device("cpu"),
                  autocast_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``[N, E]`` normalised embeddings (float32, CPU) of ``[N, 3, S, S]`` uint8 images."""
    return _encode_in_batches(lambda x: pair.encode_image(normalize(x)), images_uint8, batch_size, device,
                              autocast_dtype)


def encode_texts(pair, tokens: torch.Tensor, batch_size: int = 256, device=torch.device("cpu"),
                 autocast_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``[N, E]`` normalised embeddings (float32, CPU) of ``[N, L]`` token ids."""
    return _encode_in_batches(pair.encode_text, tokens, batch_size, device, autocast_dtype)


def evaluate_zero_shot(pair, corpus, attributes: Any, arch: str, device=torch.device("cpu"),
                       autocast_dtype: Optional[torch.dtype] = None, ks: Sequence[int] = (1, 5)) -> dict:
    """Both zero-shot evaluations of ``pair`` (:class:`~.model.ClipPair`) on an
    :class:`~.data.EncodedCorpus` of held-out images. ``attributes``: the corpus's ``zero_shot_attributes()``
    (or None to skip the attribute part). Returns ``{"attributes": {name: {...}}, "mean_accuracy",
    "mean_chance_majority", "mean_chance_uniform", "retrieval": {...}}``."""
    was_training = pair.training
    pair.eval()
    try:
        image_features = encode_images(pair, corpus.images, device=device, autocast_dtype=autocast_dtype)
        report: dict = {"num_images": len(corpus), "num_identities": corpus.num_identities, "attributes": {}}
        if attributes is not None:
            for attr in as_zero_shot_attributes(attributes):
                labels = torch.tensor([int(attr.label(a)) for a in corpus.attributes], dtype=torch.long)
                if labels.min() < 0 or labels.max() >= len(attr.classes):
                    raise ValueError(f"zero-shot attribute '{attr.name}': labels outside 0..{len(attr.classes) - 1}")
                prompt_tokens = tokenize_captions(list(attr.prompts), arch, corpus.tokens.shape[1])
                class_features = encode_texts(pair, prompt_tokens, device=device, autocast_dtype=autocast_dtype)
                report["attributes"][attr.name] = attribute_accuracy(image_features, class_features, labels)
            rows = list(report["attributes"].values())
            if rows:
                for key, src in (("mean_accuracy", "accuracy"), ("mean_chance_majority", "chance_majority"),
                                 ("mean_chance_uniform", "chance_uniform")):
                    report[key] = sum(r[src] for r in rows) / len(rows)
        caption_features = encode_texts(pair, corpus.tokens, device=device, autocast_dtype=autocast_dtype)
        report["retrieval"] = caption_recall(image_features, caption_features, corpus.identities, corpus.identities,
                                             torch.arange(len(corpus)), ks)
        return report
    finally:
        pair.train(was_training)


def format_zero_shot(report: dict) -> str:
    """A few human lines of :func:`evaluate_zero_shot`'s report."""
    lines = [f"zero-shot on {report['num_images']} held-out images of {report['num_identities']} identities"]
    attrs = report.get("attributes", {})
    if attrs:
        width = max(len(n) for n in attrs)
        lines.append(f"  {'attribute':<{width}}  accuracy  chance(1/K)  chance(majority)")
        for name, r in attrs.items():
            lines.append(f"  {name:<{width}}  {100 * r['accuracy']:7.1f}%  {100 * r['chance_uniform']:10.1f}%  "
                         f"{100 * r['chance_majority']:15.1f}%")
        lines.append(f"  {'mean':<{width}}  {100 * report['mean_accuracy']:7.1f}%  "
                     f"{100 * report['mean_chance_uniform']:10.1f}%  {100 * report['mean_chance_majority']:15.1f}%")
    r = report["retrieval"]
    recalls = "  ".join(f"{k} {100 * v:.1f}%" for k, v in r.items() if "R@" in k and not k.startswith("chance"))
    lines.append(f"  image->caption retrieval over {r['num_captions']} captions (hit: same identity; own_: the "
                 f"image's own caption): {recalls} (chance R@1 {100 * r['chance_R@1']:.1f}%)")
    return "\n".join(lines)
