#!/usr/bin/env python
"""Write a CLIP-SCGI caption file (JSONL, one ``{"image", "caption"}`` record per image, image paths relative to
the dataset directory; fastreid_clip/data/captions.py reads it). Offline: nothing is downloaded.

Modes:

* ``attributes``: render attribute annotations into the paper's template.
  - ``--format synthetic``: the built-in synthetic data (``<dataset dir>/meta.json``; every split).
  - ``--format market1501`` / ``duke``: the public attribute releases (Market-1501_Attribute /
    DukeMTMC-attribute). Expected layout::

        <dataset dir>/bounding_box_train/*.jpg
        <dataset dir>/attribute/market_attribute.mat   (or duke_attribute.mat; --attributes names another path)

    The .mat holds a struct ``market_attribute`` / ``duke_attribute`` with ``train`` and ``test`` splits, one
    1 x N array per attribute (1 / 2 coded) and ``image_index`` (the N identity ids). Attributes are per identity;
    images of identities without attributes are listed and left out (CAPTIONS.MISSING decides at training time).
* ``vlm``: a local LLaVA-style model through Hugging Face transformers (``--model`` = a directory saved with
  ``save_pretrained``; ``local_files_only``), prompted with the paper's instruction (:data:`INSTRUCTION`),
  greedy decoding, batched, with a progress bar. Resumable: records are appended after every batch and images
  already in the output file are skipped, so an interrupted run continues where it stopped.

Examples::

    python tools/caption.py attributes --dataset-dir datasets/synthetic_reid/<signature> --format synthetic
    python tools/caption.py attributes --dataset-dir datasets/Market-1501-v15.09.15 --format market1501
    python tools/caption.py vlm --dataset-dir datasets/Market-1501-v15.09.15 --model /models/llava-1.5-7b-hf
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import os.path as osp
import re
import sys
from typing import Callable, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from fastreid_clip.data.captions import (append_caption_records, pedestrian_attribute_captions,  # noqa: E402
                                         read_caption_file, relative_image_key, synthetic_attribute_captions)

logger = logging.getLogger("caption")

#: The captioning instruction of the paper (§III-A), verbatim.
INSTRUCTION = ("Describe the most obvious one people using this template for no more than 45 words: A [age] [gender] "
               "is wearing [upper clothes]. [gender] is wearing [upper clothes] and [lower clothes]. The [gender] is "
               "wearing [shoes] and carrying a [others]. The [gender] has [hair length] [and whether wear glasses].")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
ATTRIBUTE_FILES = {"market1501": "market_attribute.mat", "duke": "duke_attribute.mat"}

Describe = Callable[[List["PIL.Image.Image"]], List[str]]  # noqa: F821


# ---------------------------------------------------------------------------------------------- attributes
def write_attribute_captions(dataset_dir: str, fmt: str, out: str, attributes: Optional[str] = None,
                             overwrite: bool = False) -> int:
    """Render ``fmt`` annotations of ``dataset_dir`` into ``out`` (written whole, atomically); returns the count."""
    if osp.exists(out) and not overwrite:
        raise SystemExit(f"{out} exists; pass --overwrite to replace it (attributes mode writes the whole file)")
    if fmt == "synthetic":
        if not osp.isfile(osp.join(dataset_dir, "meta.json")):
            raise SystemExit(f"--format synthetic: '{dataset_dir}' has no meta.json (not a synthetic ReID data set)")
        captions = synthetic_attribute_captions(dataset_dir)
    else:
        mat = attributes or osp.join(dataset_dir, "attribute", ATTRIBUTE_FILES[fmt])
        if not osp.isfile(mat):
            raise SystemExit(f"--format {fmt}: attribute file '{mat}' does not exist (the release's "
                             f"{ATTRIBUTE_FILES[fmt]}; name it with --attributes)")
        captions, skipped = pedestrian_attribute_captions(dataset_dir, mat)
        if not captions:
            raise SystemExit(f"--format {fmt}: no image of '{osp.join(dataset_dir, 'bounding_box_train')}' has "
                             f"attributes in '{mat}'")
        if skipped:
            logger.warning("%d images have no attributes for their identity (first: %s); they get no caption",
                           len(skipped), ", ".join(skipped[:3]))
    tmp = f"{out}.tmp-{os.getpid()}"
    append_caption_records(tmp, sorted(captions.items()))
    os.replace(tmp, out)
    logger.info("Wrote %d captions to %s", len(captions), out)
    return len(captions)


# ---------------------------------------------------------------------------------------------- vlm
def list_images(dataset_dir: str, image_dir: str) -> List[str]:
    """Image files under ``dataset_dir/image_dir`` (recursive), sorted."""
    base = osp.join(dataset_dir, image_dir)
    if not osp.isdir(base):
        raise SystemExit(f"image directory '{base}' does not exist (--image-dir)")
    files = [p for p in glob.glob(osp.join(base, "**", "*"), recursive=True) if p.lower().endswith(IMAGE_SUFFIXES)]
    return sorted(files)


def clean_caption(text: str) -> str:
    """One line, single spaces, no surrounding quotes."""
    return re.sub(r"\s+", " ", text).strip().strip('"').strip()


def caption_images(image_paths: Sequence[str], dataset_dir: str, out: str, describe: Describe,
                   batch_size: int = 8, progress: bool = True) -> int:
    """Caption the images not yet in ``out`` with ``describe`` and append them batch by batch; returns the number
    written in this call. An empty answer is not written (a rerun tries the image again)."""
    from PIL import Image
    from tqdm import tqdm

    done = set(read_caption_file(out)) if osp.exists(out) else set()
    todo = [p for p in image_paths if relative_image_key(p, dataset_dir) not in done]
    logger.info("%d images, %d already captioned in %s, %d to do", len(image_paths), len(image_paths) - len(todo),
                out, len(todo))
    written, empty = 0, 0
    bar = tqdm(total=len(todo), desc="Captioning", disable=not progress)
    for start in range(0, len(todo), batch_size):
        paths = todo[start:start + batch_size]
        images = []
        for path in paths:
            with Image.open(path) as img:
                images.append(img.convert("RGB"))
        texts = describe(images)
        if len(texts) != len(paths):
            raise RuntimeError(f"the captioning model returned {len(texts)} captions for {len(paths)} images")
        records = []
        for path, text in zip(paths, texts):
            text = clean_caption(text)
            if text:
                records.append((relative_image_key(path, dataset_dir), text))
            else:
                empty += 1
        written += append_caption_records(out, records)
        bar.update(len(paths))
    bar.close()
    if empty:
        logger.warning("%d images got an empty caption and were not written; run again to retry them", empty)
    return written


def load_vlm(model_path: str, device: str = "cpu", dtype: str = "float32", max_new_tokens: int = 96,
             instruction: str = INSTRUCTION) -> Describe:
    """A ``describe(images) -> captions`` function of a local transformers LLaVA-style model (never downloads)."""
    try:
        import torch
        from transformers import AutoProcessor, LlavaForConditionalGeneration
    except ImportError as err:
        raise SystemExit(f"vlm mode needs Hugging Face transformers with LLaVA support ({err}); install it "
                         f"(pip install transformers) or write the caption file another way") from None
    if not osp.isdir(model_path):
        raise SystemExit(f"--model '{model_path}' is not a local model directory (saved with save_pretrained; "
                         f"nothing is downloaded)")
    processor = AutoProcessor.from_pretrained(model_path, local_files_only=True)
    model = LlavaForConditionalGeneration.from_pretrained(model_path, local_files_only=True,
                                                          torch_dtype=getattr(torch, dtype)).to(device).eval()
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"  # batched generation of a decoder-only model
    if getattr(processor, "chat_template", None):
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
        prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    else:
        prompt = f"USER: <image>\n{instruction} ASSISTANT:"

    @torch.no_grad()
    def describe(images):
        inputs = processor(images=images, text=[prompt] * len(images), return_tensors="pt", padding=True).to(device)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        return processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    return describe


# ---------------------------------------------------------------------------------------------- CLI
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode in ("attributes", "vlm"):
        p = sub.add_parser(mode)
        p.add_argument("--dataset-dir", required=True,
                       help="the dataset's directory (caption paths are relative to it)")
        p.add_argument("--out", default="", help="caption file (default <dataset dir>/captions.jsonl)")
        if mode == "attributes":
            p.add_argument("--format", required=True, choices=("synthetic", "market1501", "duke"))
            p.add_argument("--attributes", default=None, help="the release's .mat (default <dataset dir>/attribute/)")
            p.add_argument("--overwrite", action="store_true")
        else:
            p.add_argument("--model", required=True, help="local LLaVA-style model directory (transformers)")
            p.add_argument("--image-dir", default="bounding_box_train", help="images to caption, under the dataset")
            p.add_argument("--batch-size", type=int, default=8)
            p.add_argument("--device", default="cuda")
            p.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
            p.add_argument("--max-new-tokens", type=int, default=96)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None, describe: Optional[Describe] = None) -> int:
    """Run the CLI; ``describe`` replaces the VLM (tests). Returns the number of captions written."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    if not osp.isdir(args.dataset_dir):
        raise SystemExit(f"--dataset-dir '{args.dataset_dir}' is not a directory")
    out = args.out or osp.join(args.dataset_dir, "captions.jsonl")
    if args.mode == "attributes":
        return write_attribute_captions(args.dataset_dir, args.format, out, args.attributes, args.overwrite)
    if args.batch_size < 1:
        raise SystemExit(f"--batch-size {args.batch_size}: expected >= 1")
    images = list_images(args.dataset_dir, args.image_dir)
    if describe is None:
        describe = load_vlm(args.model, args.device, args.dtype, args.max_new_tokens)
    return caption_images(images, args.dataset_dir, out, describe, args.batch_size)


if __name__ == "__main__":
    main()
