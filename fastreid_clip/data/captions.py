"""Per-image captions of training images (CLIP-SCGI): the JSONL caption file, its validation, attribute captions.

A caption file is JSON Lines, one record per image::

    {"image": "bounding_box_train/0002_c1s1_000451_03.jpg", "caption": "A young man is wearing ..."}

``image`` is relative to the dataset's directory (FastReID's ``dataset.dataset_dir``; an absolute path is matched
as it is). By default the file is ``<dataset_dir>/captions.jsonl`` (``CAPTIONS.FILE_NAME``) for every training
dataset; ``CAPTIONS.FILES`` names one file per ``DATASETS.NAMES`` entry instead. ``tools/caption.py`` writes such
files (``attributes`` mode from attribute annotations, ``vlm`` mode with a local LLaVA-style model).

Loading (:func:`load_train_captions`) matches the records to the training items and counts images without a
caption, records of images that are not training images (ignored: a file may also cover query / gallery), empty
captions (treated as missing) and captions longer than CLIP's 77-token context (kept; the tokenizer truncates them
to 76 tokens + EOT). Images without a caption are an error that counts and names them unless ``CAPTIONS.MISSING``
is ``fallback``, which gives them ``CAPTIONS.FALLBACK_TEXT`` ("a photo of a person") and logs the count.

Attribute captions (:func:`synthetic_attribute_captions`, :func:`pedestrian_attribute_captions`) render
annotations into the CLIP-SCGI instruction template "A [age] [gender] is wearing [upper clothes]. [gender] is
wearing [upper clothes] and [lower clothes]. The [gender] is wearing [shoes] and carrying a [others]. The [gender]
has [hair length] [and whether wear glasses]." (paper §III-B); a slot the annotation lacks is left out.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..config.validate import ConfigValueError

__all__ = ["CaptionFileError", "CaptionReport", "FALLBACK_CAPTION", "MISSING_MODES", "read_caption_file",
           "append_caption_records", "match_captions", "load_train_captions", "clip_token_length",
           "synthetic_attribute_captions", "pedestrian_attribute_captions", "render_template", "relative_image_key"]

logger = logging.getLogger(__name__)

FALLBACK_CAPTION = "a photo of a person"
MISSING_MODES = ("error", "fallback")
CONTEXT_LENGTH = 77  # CLIP's text context (SOS + 75 tokens + EOT)
_SHOW = 5  # images named in a message


class CaptionFileError(ValueError):
    """A caption file that cannot be used; the message names the file (and line or images)."""


def _names(paths: Sequence[str], total: Optional[int] = None) -> str:
    total = len(paths) if total is None else total
    shown = ", ".join(f"'{p}'" for p in list(paths)[:_SHOW])
    return shown + (f" and {total - _SHOW} more" if total > _SHOW else "")


def relative_image_key(path: str, dataset_dir: str) -> str:
    """The caption-file key of an image: its path relative to ``dataset_dir`` with ``/`` separators (absolute
    when it lies outside the directory)."""
    path = osp.normpath(osp.abspath(path))
    rel = osp.relpath(path, osp.abspath(dataset_dir)) if dataset_dir else path
    if rel.startswith(".."):
        rel = path
    return rel.replace(os.sep, "/")


def _normal_key(image: str) -> str:
    key = osp.normpath(image).replace(os.sep, "/")
    return key[2:] if key.startswith("./") else key


def read_caption_file(path: str) -> Dict[str, str]:
    """``{image key: caption}`` of a JSONL caption file (blank lines skipped).

    Raises:
        FileNotFoundError: no such file.
        CaptionFileError: a line that is not a JSON object with string ``image`` and ``caption``, or an image
            listed twice with different captions (``path:line`` named).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f"caption file '{path}' does not exist")
    captions: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise CaptionFileError(f"{path}:{number}: not a JSON record ({err.msg}); expected "
                                       f'{{"image": "<path relative to the dataset>", "caption": "<text>"}}') from None
            if not isinstance(record, dict) or not isinstance(record.get("image"), str) \
                    or not isinstance(record.get("caption"), str):
                raise CaptionFileError(f"{path}:{number}: expected an object with string fields 'image' and "
                                       f"'caption', got {line.strip()[:120]}")
            key = _normal_key(record["image"])
            if key in captions and captions[key] != record["caption"]:
                raise CaptionFileError(f"{path}:{number}: image '{key}' is listed twice with different captions")
            captions[key] = record["caption"]
    return captions


def append_caption_records(path: str, records: Iterable[Tuple[str, str]]) -> int:
    """Append ``(image key, caption)`` records to a JSONL file (created if needed), flushed; returns the count."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    count = 0
    with open(path, "a", encoding="utf-8") as f:
        for image, text in records:
            f.write(json.dumps({"image": image, "caption": text}, ensure_ascii=False) + "\n")
            count += 1
        f.flush()
        os.fsync(f.fileno())
    return count


def clip_token_length(text: str) -> int:
    """CLIP BPE tokens of ``text`` including SOS and EOT (more than 77 = truncated by the tokenizer)."""
    from open_clip.tokenizer import _tokenizer

    return len(_tokenizer.encode(text)) + 2


@dataclass
class CaptionReport:
    """Counts of matching one caption file to the training images of one dataset."""

    source: str
    num_images: int
    missing: List[str] = field(default_factory=list)  # training images without a record
    empty: List[str] = field(default_factory=list)  # training images whose caption is blank
    unknown: int = 0  # records of images that are not training images
    truncated: List[str] = field(default_factory=list)  # training images whose caption exceeds 77 tokens

    @property
    def uncovered(self) -> List[str]:
        return self.missing + self.empty

    def summary(self) -> str:
        return (f"captions '{self.source}': {self.num_images} training images, {self.num_images - len(self.uncovered)}"
                f" captioned, {len(self.missing)} without a caption, {len(self.empty)} empty, {self.unknown} records "
                f"of unknown images, {len(self.truncated)} longer than {CONTEXT_LENGTH} tokens (truncated)")


def match_captions(image_paths: Sequence[str], dataset_dir: str, captions: Mapping[str, str], source: str,
                   missing: str = "error", fallback_text: str = FALLBACK_CAPTION,
                   token_length: Optional[Callable[[str], int]] = clip_token_length) -> Tuple[List[str], CaptionReport]:
    """One caption per training image, and the counts.

    Args:
        image_paths: absolute training image paths.
        dataset_dir: directory the caption keys are relative to.
        captions: ``{key: caption}`` (:func:`read_caption_file`).
        source: the file, named in messages.
        missing: ``error`` (uncovered images raise) or ``fallback`` (they get ``fallback_text``).
        token_length: CLIP token count of a caption (None = do not count over-long captions).

    Raises:
        CaptionFileError: uncovered images with ``missing="error"``; the message counts and names them.
    """
    if missing not in MISSING_MODES:
        raise ConfigValueError("CAPTIONS.MISSING", missing, f"one of {', '.join(MISSING_MODES)}")
    report = CaptionReport(source, len(image_paths))
    keys = [relative_image_key(p, dataset_dir) for p in image_paths]
    texts: List[Optional[str]] = []
    lengths: Dict[str, int] = {}
    for path, key in zip(image_paths, keys):
        text = captions.get(key, captions.get(osp.abspath(path)))
        if text is None:
            report.missing.append(key)
        elif not text.strip():
            report.empty.append(key)
            text = None
        elif token_length is not None:
            if text not in lengths:
                lengths[text] = token_length(text)
            if lengths[text] > CONTEXT_LENGTH:
                report.truncated.append(key)
        texts.append(text)
    report.unknown = len(set(captions) - set(keys) - {osp.abspath(p) for p in image_paths})
    uncovered = report.uncovered
    if uncovered and missing == "error":
        parts = []
        if report.missing:
            parts.append(f"{len(report.missing)} of {len(keys)} training images have no caption "
                         f"({_names(report.missing)})")
        if report.empty:
            parts.append(f"{len(report.empty)} have an empty caption ({_names(report.empty)})")
        raise CaptionFileError(f"caption file '{source}': {'; '.join(parts)}. Caption them (tools/caption.py appends "
                               f"to the file and skips done images) or set CAPTIONS.MISSING fallback to use "
                               f"'{fallback_text}' for them")
    if uncovered:
        logger.warning("caption file '%s': %d of %d training images have no (or an empty) caption; using '%s' for "
                       "them (CAPTIONS.MISSING fallback)", source, len(uncovered), len(keys), fallback_text)
    if report.truncated:
        logger.warning("caption file '%s': %d captions are longer than %d CLIP tokens and are truncated (%s)",
                       source, len(report.truncated), CONTEXT_LENGTH, _names(report.truncated))
    logger.info(report.summary())
    return [fallback_text if t is None else t for t in texts], report


def _caption_file(cfg, index: int, name: str, dataset) -> str:
    files = tuple(cfg.CAPTIONS.FILES)
    if files:
        if len(files) != len(cfg.DATASETS.NAMES):
            raise ConfigValueError("CAPTIONS.FILES", files, f"one caption file per DATASETS.NAMES entry "
                                   f"({len(cfg.DATASETS.NAMES)}), or () for <dataset dir>/{cfg.CAPTIONS.FILE_NAME}")
        return files[index]
    return osp.join(_dataset_dir(dataset), cfg.CAPTIONS.FILE_NAME)


def _dataset_dir(dataset) -> str:
    return str(getattr(dataset, "dataset_dir", None) or getattr(dataset, "root", ""))


def load_train_captions(cfg, img_items: Sequence[tuple],
                        token_length: Optional[Callable[[str], int]] = clip_token_length,
                        ) -> Tuple[List[str], List[CaptionReport]]:
    """One caption per training item (``img_items`` order) from the caption file of every ``DATASETS.NAMES``
    dataset, with ``CAPTIONS.GENERATE attributes`` writing a missing file from the dataset's attributes first.

    Raises:
        ConfigValueError / FileNotFoundError / CaptionFileError: bad keys, a missing file, uncovered images.
    """
    from .build import training_sources

    c = cfg.CAPTIONS
    if c.GENERATE not in ("", "attributes"):
        raise ConfigValueError("CAPTIONS.GENERATE", c.GENERATE, "'' (read the caption files) or 'attributes' "
                               "(write missing ones from the dataset's attribute annotations first)")
    by_path: Dict[str, str] = {}
    reports = []
    for index, name, dataset, train, _, _ in training_sources(cfg):
        path = _caption_file(cfg, index, name, dataset)
        if not osp.isfile(path) and c.GENERATE == "attributes":
            _generate_attribute_file(dataset, name, path)
        if not osp.isfile(path):
            key = f"CAPTIONS.FILES[{index}]" if tuple(c.FILES) else "CAPTIONS.FILE_NAME"
            raise FileNotFoundError(f"no caption file for training dataset '{name}': '{path}' does not exist ({key}). "
                                    f"Write it with tools/caption.py (attributes or vlm mode), name it in "
                                    f"CAPTIONS.FILES, or set CAPTIONS.GENERATE attributes for a dataset with "
                                    f"attribute annotations")
        paths = [item[0] for item in train]
        texts, report = match_captions(paths, _dataset_dir(dataset), read_caption_file(path), path, c.MISSING,
                                       c.FALLBACK_TEXT, token_length)
        by_path.update({osp.abspath(p): t for p, t in zip(paths, texts)})
        reports.append(report)
    out = []
    for item in img_items:
        text = by_path.get(osp.abspath(item[0]))
        if text is None:
            raise CaptionFileError(f"training image '{item[0]}' belongs to none of DATASETS.NAMES "
                                   f"{tuple(cfg.DATASETS.NAMES)}, so no caption file covers it")
        out.append(text)
    return out, reports


def _generate_attribute_file(dataset, name: str, path: str) -> None:
    meta = getattr(dataset, "dataset_dir", None)
    if meta is None or not osp.isfile(osp.join(meta, "meta.json")):
        raise ConfigValueError("CAPTIONS.GENERATE", "attributes", f"a dataset with attribute annotations; "
                               f"'{name}' has no meta.json (for Market-1501 / DukeMTMC-reID attribute releases run "
                               f"tools/caption.py attributes --format market1501|duke)")
    captions = synthetic_attribute_captions(meta)
    tmp = f"{path}.tmp-{os.getpid()}"
    append_caption_records(tmp, sorted(captions.items()))
    os.replace(tmp, path)  # concurrent writers produce the same file
    logger.info("Wrote %d attribute captions of '%s' to %s", len(captions), name, path)


# ---------------------------------------------------------------------------------------------- attribute captions
def render_template(gender: str, upper: str, lower: str, *, age: str = "", shoes: str = "shoes",
                    others: str = "nothing", hair: str = "", glasses: Optional[bool] = None) -> str:
    """The CLIP-SCGI template with the slots filled; ``age`` / ``hair`` / ``glasses`` are left out when unknown.

    Example: ``render_template("man", "a black shirt", "blue trousers", age="young", hair="short")`` ->
    "A young man is wearing a black shirt. He is wearing a black shirt and blue trousers. The man is wearing shoes
    and carrying nothing. The man has short hair."
    """
    pronoun = "He" if gender == "man" else "She" if gender == "woman" else "The person"
    subject = f"{age} {gender}".strip()
    article = "An" if subject[:1].lower() in "aeiou" else "A"
    text = (f"{article} {subject} is wearing {upper}. {pronoun} is wearing {upper} and {lower}. "
            f"The {gender} is wearing {shoes} and carrying {others}.")
    tail = []
    if hair:
        tail.append(f"{hair} hair")
    if glasses is not None:
        tail.append("glasses" if glasses else "no glasses")
    if tail:
        text += f" The {gender} has {' and '.join(tail)}."
    return text


def synthetic_attribute_captions(dataset_dir: str) -> Dict[str, str]:
    """``{image key: caption}`` of a synthetic ReID data set from its ``meta.json`` attributes (every split)."""
    from .synthetic.attributes import IdentityAttributes, caption

    with open(osp.join(dataset_dir, "meta.json")) as f:
        images = json.load(f)["images"]
    return {rel: caption(IdentityAttributes(**info["attributes"])) for rel, info in images.items()}


# Market-1501 attribute release (Lin et al., "Improving person re-identification by attribute and identity
# learning"): market_attribute.mat, struct market_attribute.{train,test}; DukeMTMC-attribute: duke_attribute.mat,
# struct duke_attribute.{train,test}. Each split holds one 1 x N array per attribute (1 = no / first value, 2 =
# yes / second value) and image_index, the N identity ids ('0002', ...).
_MARKET_AGES = {1: "young", 2: "teenage", 3: "adult", 4: "elderly"}
_UP_COLOURS = ("black", "white", "red", "purple", "yellow", "gray", "blue", "green", "brown")
_DOWN_COLOURS = ("black", "white", "pink", "purple", "yellow", "gray", "blue", "green", "brown", "red")


def _attr(row: Mapping[str, int], name: str) -> Optional[int]:
    value = row.get(name)
    return None if value is None else int(value)


def _colour(row: Mapping[str, int], prefix: str, colours: Sequence[str]) -> str:
    found = [c for c in colours if _attr(row, prefix + c) == 2]
    return f"{found[0]} " if found else ""


def _identity_caption(row: Mapping[str, int]) -> str:
    gender = {1: "man", 2: "woman"}.get(_attr(row, "gender"), "person")
    age = _MARKET_AGES.get(_attr(row, "age"), "")
    up_len = _attr(row, "up") if "up" in row else _attr(row, "top")  # Market 'up' 1 long / 2 short; Duke 'top'
    sleeve = {1: "long-sleeved ", 2: "short-sleeved "}.get(up_len, "") if "up" in row else \
        {1: "short ", 2: "long "}.get(up_len, "")
    upper = f"a {_colour(row, 'up', _UP_COLOURS)}{sleeve}top".replace("  ", " ")
    colour = _colour(row, "down", _DOWN_COLOURS)
    if _attr(row, "clothes") == 1:
        lower = f"a {colour}{'long ' if _attr(row, 'down') == 1 else 'short ' if _attr(row, 'down') == 2 else ''}dress"
    else:
        length = _attr(row, "down")
        kind = "shorts" if length == 2 else "trousers"
        lower = f"{colour}{kind}"
    shoes = "shoes"
    if "boots" in row or "shoes" in row:
        shade = {1: "dark ", 2: "light "}.get(_attr(row, "shoes"), "")
        shoes = f"{shade}{'boots' if _attr(row, 'boots') == 2 else 'shoes'}"
    carried = [n for n in ("backpack", "handbag", "bag") if _attr(row, n) == 2]
    others = " and ".join(f"a {n}" for n in carried) or "nothing"
    hair = {1: "short", 2: "long"}.get(_attr(row, "hair"), "")
    text = render_template(gender, upper, lower, age=age, shoes=shoes, others=others, hair=hair)
    if _attr(row, "hat") == 2:
        text += f" The {gender} wears a hat."
    return text


def _mat_split(mat_path: str, split: str) -> Dict[str, Dict[str, int]]:
    import numpy as np
    from scipy.io import loadmat

    data = loadmat(mat_path, squeeze_me=True, struct_as_record=False)
    roots = [k for k in data if not k.startswith("__")]
    if len(roots) != 1:
        raise CaptionFileError(f"attribute file '{mat_path}': expected one struct (market_attribute / "
                               f"duke_attribute), found {roots}")
    part = getattr(data[roots[0]], split, None)
    if part is None:
        raise CaptionFileError(f"attribute file '{mat_path}': struct '{roots[0]}' has no '{split}' split")
    fields = [f for f in part._fieldnames if f != "image_index"]
    ids = [str(i) for i in np.atleast_1d(part.image_index)]  # squeeze_me turns a 1-element array into a scalar
    columns = {f: list(np.atleast_1d(getattr(part, f))) for f in fields}
    for f, values in columns.items():
        if len(values) != len(ids):
            raise CaptionFileError(f"attribute file '{mat_path}': {split}.{f} has {len(values)} values for "
                                   f"{len(ids)} identities")
    return {pid.zfill(4): {f: int(columns[f][i]) for f in fields} for i, pid in enumerate(ids)}


def pedestrian_attribute_captions(dataset_dir: str, mat_path: str, split: str = "train",
                                  image_dir: str = "bounding_box_train") -> Tuple[Dict[str, str], List[str]]:
    """Captions of the Market-1501 / DukeMTMC-reID attribute releases for the images of ``image_dir``.

    Expected layout (the releases' own files)::

        <dataset_dir>/bounding_box_train/0002_c1s1_000451_03.jpg   (Market)  0001_c2_f0046182.jpg  (Duke)
        <mat_path> = e.g. <dataset_dir>/attribute/market_attribute.mat or duke_attribute.mat

    The identity id is the file name up to the first ``_``; attributes are per identity.

    Returns:
        ``({image key: caption}, [keys of images whose identity has no attributes])``.
    """
    rows = _mat_split(mat_path, split)
    captions, skipped = {}, []
    cache: Dict[str, str] = {}
    for path in sorted(glob.glob(osp.join(dataset_dir, image_dir, "*.jpg"))):
        key = relative_image_key(path, dataset_dir)
        pid = osp.basename(path).split("_")[0].zfill(4)
        if pid not in rows:
            skipped.append(key)
            continue
        if pid not in cache:
            cache[pid] = _identity_caption(rows[pid])
        captions[key] = cache[pid]
    return captions, skipped
