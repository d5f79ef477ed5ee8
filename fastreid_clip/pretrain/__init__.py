"""Contrastive CLIP pretraining on the synthetic world (``tools/pretrain_clip.py``, docs/pretraining.md).

transforms.py  corpus image -> square uint8 -> CLIP-normalised tensor; captions -> token ids
data.py        EncodedCorpus: a corpus Dataset read once into memory
sampler.py     batch plans as functions of (seed, step); one image per identity per batch
model.py       the open_clip CLIP (tiny / synthetic configs), ClipPair (EOT-truncated text tower)
optim.py       AdamW with CLIP's weight-decay rule, cosine schedule with linear warm-up
checkpoints.py atomic checksummed checkpoints, newest valid one resumed
trainer.py     the training loop with open_clip's ClipLoss
zero_shot.py   attribute zero-shot accuracy and image->caption Recall@k
export.py      safetensors weights + open_clip config + report
"""

from .data import EncodedCorpus, encode_corpus
from .export import load_pretrained, output_paths, write_outputs
from .model import PRETRAIN_ARCHS, ClipPair, create_pretrain_model, open_clip_config
from .trainer import PretrainConfig, PretrainResult, ResumeMismatch, pretrain
from .zero_shot import (ZeroShotAttribute, as_zero_shot_attributes, attribute_accuracy, caption_recall,
                        evaluate_zero_shot, format_zero_shot)

__all__ = [
    "EncodedCorpus", "encode_corpus", "load_pretrained", "output_paths", "write_outputs", "PRETRAIN_ARCHS",
    "ClipPair", "create_pretrain_model", "open_clip_config", "PretrainConfig", "PretrainResult", "ResumeMismatch",
    "pretrain", "ZeroShotAttribute", "as_zero_shot_attributes", "attribute_accuracy", "caption_recall",
    "evaluate_zero_shot", "format_zero_shot",
]
