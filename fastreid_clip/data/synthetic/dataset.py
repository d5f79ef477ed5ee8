"""Generation of the synthetic ReID data set to disk, its FastReID dataset class and its config keys.

On disk the data set uses Market-1501's layout, so FastReID's own ``Market1501`` loader reads it too::

    <out_dir>/bounding_box_train/0001_c1s1_000001_00.jpg   training identities, all their images
    <out_dir>/query/...                                     one image per (test identity, query camera)
    <out_dir>/bounding_box_test/...                         the other images of the test identities
    <out_dir>/meta.json                                     format version, parameters, per-image labels

File names are ``PPPP_cCs1_FFFFFF_00.jpg``: 4-digit identity (from 0001; training identities first),
1-based camera digit, 6-digit running frame number. ``meta.json`` maps every relative path to its ``pid``,
``camid`` (0-based), ``domain``, ``caption`` and ``attributes``.

:class:`SyntheticReID` generates (once) into ``<root>/synthetic_reid/<signature>/``, the signature being a
digest of the parameters and of the drawing code; :func:`export_market1501` generates into
``<dest_root>/Market-1501-v15.09.15/`` for ``Market1501(root=dest_root)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import os.path as osp
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np
from fastreid.config import CfgNode
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset
from tqdm import tqdm

from . import attributes as _attributes_module
from . import render as _render_module
from .attributes import caption, sample_identities
from .render import domain_style, render_image, sample_camera_style

__all__ = [
    "FORMAT_VERSION",
    "META_FILE",
    "SyntheticParams",
    "SyntheticReID",
    "add_synthetic_config",
    "export_market1501",
    "generate_synthetic_reid",
    "generator_digest",
    "load_meta",
    "synthetic_kwargs_from_cfg",
]

logger = logging.getLogger(__name__)

#: Version of the on-disk layout and of ``meta.json``. Changes of the drawing code need no bump: they change
#: :func:`generator_digest`, which is part of the cache key too.
FORMAT_VERSION = 1
META_FILE = "meta.json"
TRAIN_DIR, QUERY_DIR, GALLERY_DIR = "bounding_box_train", "query", "bounding_box_test"
MARKET_DIR = "Market-1501-v15.09.15"
_JPEG_QUALITY = 95
# Limits of FastReID's Market1501 loader (it asserts 0 <= pid <= 1501 and 1 <= camera <= 6).
_MARKET_MAX_PID, _MARKET_MAX_CAMERAS = 1501, 6


def generator_digest() -> str:
    """A short digest of :data:`FORMAT_VERSION` and of the source of the sampling and drawing modules.

    Editing :mod:`.attributes` or :mod:`.render` changes it, so caches written by older code are not reused.
    """
    digest = hashlib.sha1(str(FORMAT_VERSION).encode())
    for module in (_attributes_module, _render_module):
        with open(module.__file__, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:12]


_DOMAIN_LISTS = ("train_domains", "test_domains")


def _is_plain_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SyntheticParams:
    """Everything the generated data set depends on.

    Attributes:
        num_train_ids: Identities in ``bounding_box_train``.
        num_test_ids: Identities split into ``query`` and ``bounding_box_test``; disjoint from training ones.
        num_cameras: Cameras per domain, at most 9 (at most 6 for FastReID's ``Market1501`` loader).
        cameras_per_id: Cameras each identity appears in, ``2 <= cameras_per_id <= num_cameras``.
        images_per_id_camera: Images of each identity in each of its cameras.
        num_domains: Visually distinct domains; identities are assigned to them in turn.
        height: Image height in pixels.
        width: Image width in pixels.
        seed: Generation seed (>= 0); the data set is a pure function of all these parameters (and of the
            drawing code, see :func:`generator_digest`).
        train_domains: Domains the training identities are dealt to, in turn (``()`` = every domain).
        test_domains: Domains the test (query/gallery) identities are dealt to (``()`` = every domain). Disjoint
            lists give a domain-generalisation split: e.g. 4 domains, train on ``(0, 1, 2)``, test on ``(3,)``.
            Which identities exist and how they look does not depend on these two lists, only where they are
            filmed.
    """

    num_train_ids: int = 60
    num_test_ids: int = 40
    num_cameras: int = 6
    cameras_per_id: int = 4
    images_per_id_camera: int = 3
    num_domains: int = 3
    height: int = 256
    width: int = 128
    seed: int = 0
    train_domains: tuple = ()
    test_domains: tuple = ()

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in _DOMAIN_LISTS:
                if not isinstance(value, (tuple, list)) or not all(_is_plain_int(d) for d in value):
                    raise TypeError(f"{field.name} must be a tuple of domain indices, got {value!r}")
                object.__setattr__(self, field.name, tuple(value))
            elif not _is_plain_int(value):
                raise TypeError(f"{field.name} must be an int, got {value!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.num_train_ids < 1 or self.num_test_ids < 1:
            raise ValueError("num_train_ids and num_test_ids must be >= 1")
        if self.num_train_ids + self.num_test_ids > 9999:
            raise ValueError("at most 9999 identities fit the 4-digit Market-1501 file names")
        if not 1 <= self.num_cameras <= 9:
            raise ValueError(f"num_cameras must be in [1, 9] (one camera digit), got {self.num_cameras}")
        if not 2 <= self.cameras_per_id <= self.num_cameras:
            raise ValueError(
                f"cameras_per_id must be in [2, num_cameras={self.num_cameras}], got {self.cameras_per_id}"
            )
        if self.images_per_id_camera < 1 or self.num_domains < 1:
            raise ValueError("images_per_id_camera and num_domains must be >= 1")
        for name in _DOMAIN_LISTS:
            domains = getattr(self, name)
            if any(not 0 <= d < self.num_domains for d in domains) or len(set(domains)) != len(domains):
                raise ValueError(f"{name} must list distinct domain indices in [0, num_domains={self.num_domains}), "
                                 f"got {domains}")
        if self.height < 32 or self.width < 16:
            raise ValueError(f"images must be at least 32 x 16 pixels, got {self.height} x {self.width}")
        if self.num_images > 999999:
            raise ValueError("at most 999999 images fit the 6-digit Market-1501 frame numbers")

    @property
    def num_images(self) -> int:
        """Total number of images (train + query + gallery)."""
        return (self.num_train_ids + self.num_test_ids) * self.cameras_per_id * self.images_per_id_camera

    def domains_of(self, train: bool) -> tuple:
        """The domains the training (``train=True``) or test identities are dealt to."""
        domains = self.train_domains if train else self.test_domains
        return domains or tuple(range(self.num_domains))

    def to_dict(self) -> dict:
        """The parameters as JSON values; empty domain lists (the default) are left out, so the signature and
        ``meta.json`` of a data set without a domain split are those of the code before the split existed."""
        values = dataclasses.asdict(self)
        for name in _DOMAIN_LISTS:
            if values[name]:
                values[name] = list(values[name])
            else:
                del values[name]
        return values

    def signature(self) -> str:
        """A short hexadecimal digest of the parameters and of :func:`generator_digest` (a cache directory name)."""
        text = json.dumps({"generator": generator_digest(), **self.to_dict()}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class _ImageSpec:
    """One image to generate: where it goes, whom it shows and through which camera."""

    rel_path: str
    identity: int  # 0-based index into the identity list; the file's pid is identity + 1
    camera: int  # 0-based
    shot: int  # index of the image among those of this identity in this camera
    domain: int


def _identity_domain(identity: int, params: SyntheticParams) -> int:
    """Training and test identities are each dealt in turn to their split's domains (by default every domain, so
    both splits cover all)."""
    is_train = identity < params.num_train_ids
    index = identity if is_train else identity - params.num_train_ids
    domains = params.domains_of(is_train)
    return domains[index % len(domains)]


def _plan(params: SyntheticParams) -> list[_ImageSpec]:
    """Decides every image's identity, camera, split and file name (no drawing).

    For a test identity with at least two images per camera, every camera gives one random image to the
    query set and the rest to the gallery; with one image per camera, half of its cameras (rounded down)
    give their image to the query set and the other cameras theirs to the gallery. Either way every query
    has a same-identity gallery image from another camera.
    """
    specs: list[_ImageSpec] = []
    shots = params.images_per_id_camera
    for identity in range(params.num_train_ids + params.num_test_ids):
        rng = np.random.default_rng([params.seed, 3, identity])
        cameras = sorted(int(c) for c in rng.choice(params.num_cameras, params.cameras_per_id, replace=False))
        is_train = identity < params.num_train_ids
        if shots >= 2:
            query_cameras = set(cameras)
        else:
            query_cameras = set(int(c) for c in rng.permutation(cameras)[: params.cameras_per_id // 2])
        for camera in cameras:
            query_shot = int(rng.integers(shots)) if camera in query_cameras else -1
            for shot in range(shots):
                folder = TRAIN_DIR if is_train else QUERY_DIR if shot == query_shot else GALLERY_DIR
                frame = len(specs) + 1
                name = f"{folder}/{identity + 1:04d}_c{camera + 1}s1_{frame:06d}_00.jpg"
                specs.append(_ImageSpec(name, identity, camera, shot, _identity_domain(identity, params)))
    return specs


def _write_dataset(out_dir: str, params: SyntheticParams, verbose: bool) -> None:
    """Draws every image of the plan into ``out_dir`` and writes ``meta.json`` last."""
    for folder in (TRAIN_DIR, QUERY_DIR, GALLERY_DIR):
        os.makedirs(osp.join(out_dir, folder), exist_ok=True)
    identities = sample_identities(params.num_train_ids + params.num_test_ids, params.seed)
    captions = [caption(person) for person in identities]
    domains = [domain_style(d, params.num_domains) for d in range(params.num_domains)]
    cameras = {}
    for d in range(params.num_domains):
        for c in range(params.num_cameras):
            rng = np.random.default_rng([params.seed, 1, d, c])
            cameras[d, c] = sample_camera_style(rng, domains[d], params.height, params.width)
    images = {}
    for spec in tqdm(_plan(params), desc="synthetic ReID", unit="img", disable=not verbose):
        person = identities[spec.identity]
        rng = np.random.default_rng([params.seed, 2, spec.identity, spec.camera, spec.shot])
        image = render_image(person, domains[spec.domain], cameras[spec.domain, spec.camera], rng)
        image.save(osp.join(out_dir, spec.rel_path), quality=_JPEG_QUALITY, subsampling=0)
        images[spec.rel_path] = {
            "pid": spec.identity + 1,
            "camid": spec.camera,
            "domain": spec.domain,
            "caption": captions[spec.identity],
            "attributes": person.to_dict(),
        }
    meta = {
        "format_version": FORMAT_VERSION,
        "generator": generator_digest(),
        "params": params.to_dict(),
        "images": images,
    }
    with open(osp.join(out_dir, META_FILE), "w") as f:
        json.dump(meta, f, indent=1)


def _read_meta(out_dir: str) -> dict | None:
    """The parsed ``meta.json`` of ``out_dir``, or None when it is missing or unreadable."""
    try:
        with open(osp.join(out_dir, META_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_cached(out_dir: str, params: SyntheticParams) -> bool:
    meta = _read_meta(out_dir)
    return (
        meta is not None
        and meta.get("format_version") == FORMAT_VERSION
        and meta.get("generator") == generator_digest()
        and meta.get("params") == params.to_dict()
    )


def generate_synthetic_reid(out_dir: str, params: SyntheticParams, verbose: bool = True) -> bool:
    """Generates the data set into ``out_dir`` unless it already holds it (same parameters and generator).

    Images are drawn into a hidden temporary sibling directory, which replaces ``out_dir`` only once
    complete, so an interrupted run never leaves a data set that looks complete. A previous data set of
    other parameters in ``out_dir`` (recognised by its ``meta.json``) is replaced; any other non-empty
    ``out_dir`` is left alone and raises. Concurrent calls (e.g. one per training process) are safe.

    Args:
        out_dir: Target directory (Market-1501 layout plus ``meta.json``).
        params: Generation parameters.
        verbose: Log and show a progress bar.

    Returns:
        True when images were generated, False when the cached data set was kept.

    Raises:
        FileExistsError: ``out_dir`` is not empty but was not written by this generator.
    """
    out_dir = osp.abspath(out_dir)
    if _is_cached(out_dir, params):
        return False
    if osp.isdir(out_dir) and os.listdir(out_dir) and not osp.isfile(osp.join(out_dir, META_FILE)):
        raise FileExistsError(
            f"{out_dir} exists but has no {META_FILE}: not a synthetic ReID data set, not touching it"
        )
    parent = osp.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    if verbose:
        logger.info(f"Generating {params.num_images} synthetic ReID images into {out_dir}")
    tmp_dir = tempfile.mkdtemp(prefix=f".{osp.basename(out_dir)}.tmp-", dir=parent)
    os.chmod(tmp_dir, 0o755)  # mkdtemp's 0o700 would make the renamed data set private
    try:
        _write_dataset(tmp_dir, params, verbose)
        if _is_cached(out_dir, params):  # another process finished first
            return True
        if osp.exists(out_dir):
            shutil.rmtree(out_dir)
        try:
            os.rename(tmp_dir, out_dir)
        except OSError:
            if not _is_cached(out_dir, params):
                raise
        return True
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def load_meta(out_dir: str) -> dict:
    """Reads ``<out_dir>/meta.json`` and checks that every image it lists exists.

    Args:
        out_dir: A directory written by :func:`generate_synthetic_reid`.

    Returns:
        ``{"format_version": int, "generator": str, "params": dict, "images": {relative path: {"pid": int, "camid": int,
        "domain": int, "caption": str, "attributes": dict}}}``.

    Raises:
        FileNotFoundError: ``meta.json`` or one of the images is missing.
    """
    meta_path = osp.join(out_dir, META_FILE)
    with open(meta_path) as f:
        meta = json.load(f)
    for rel_path in meta["images"]:
        if not osp.isfile(osp.join(out_dir, rel_path)):
            raise FileNotFoundError(
                f"synthetic ReID image {osp.join(out_dir, rel_path)} listed in {meta_path} is missing; "
                f"the data set is corrupt: delete {out_dir} to regenerate it"
            )
    return meta


def export_market1501(dest_root: str, verbose: bool = True, **params) -> str:
    """Generates the data set for FastReID's own ``Market1501`` loader: ``Market1501(root=dest_root)``.

    Args:
        dest_root: Root directory; the data goes to ``<dest_root>/Market-1501-v15.09.15/``.
        verbose: Log and show a progress bar.
        **params: Fields of :class:`SyntheticParams`.

    Returns:
        The data directory ``<dest_root>/Market-1501-v15.09.15``.

    Raises:
        ValueError: The parameters exceed what the ``Market1501`` loader accepts (6 cameras, pid 1501).
    """
    config = SyntheticParams(**params)
    if config.num_cameras > _MARKET_MAX_CAMERAS or config.num_train_ids + config.num_test_ids > _MARKET_MAX_PID:
        raise ValueError(
            f"FastReID's Market1501 loader accepts at most {_MARKET_MAX_CAMERAS} cameras and pid {_MARKET_MAX_PID}"
        )
    data_dir = osp.join(dest_root, MARKET_DIR)
    generate_synthetic_reid(data_dir, config, verbose=verbose)
    return data_dir


@DATASET_REGISTRY.register()
class SyntheticReID(ImageDataset):
    """The procedural synthetic person ReID data set, generated on first use and cached on disk.

    ``train`` / ``query`` / ``gallery`` hold ``(img_path, pid, camid)`` exactly like FastReID's
    ``Market1501``: training pids and camids are the strings ``"synthetic_<pid>"`` / ``"synthetic_<camid>"``,
    query and gallery ones plain ints, camids 0-based. Image paths are absolute.

    Attributes:
        dataset_dir: Absolute directory of this parameter set, ``<root>/synthetic_reid/<signature>``.
        params: The :class:`SyntheticParams`.
        meta: Image path -> ``{"pid", "camid", "domain", "caption", "attributes"}`` for every image.
        captions: Image path -> attribute caption (identical for all images of an identity).
        domains: Image path -> domain index in ``[0, num_domains)``.
    """

    dataset_name = "synthetic"

    @staticmethod
    def kwargs_from_config(cfg: CfgNode) -> dict:
        """Constructor arguments from ``cfg.DATASETS.SYNTHETIC`` (used by ``fastreid_clip.data.build_dataset``)."""
        return synthetic_kwargs_from_cfg(cfg)

    def __init__(
        self,
        root: str = "datasets",
        num_train_ids: int = SyntheticParams.num_train_ids,
        num_test_ids: int = SyntheticParams.num_test_ids,
        num_cameras: int = SyntheticParams.num_cameras,
        images_per_id_camera: int = SyntheticParams.images_per_id_camera,
        cameras_per_id: int = SyntheticParams.cameras_per_id,
        num_domains: int = SyntheticParams.num_domains,
        height: int = SyntheticParams.height,
        width: int = SyntheticParams.width,
        seed: int = SyntheticParams.seed,
        train_domains: tuple = (),
        test_domains: tuple = (),
        **kwargs,
    ):
        self.root = root
        self.params = SyntheticParams(
            num_train_ids=num_train_ids,
            num_test_ids=num_test_ids,
            num_cameras=num_cameras,
            cameras_per_id=cameras_per_id,
            images_per_id_camera=images_per_id_camera,
            num_domains=num_domains,
            height=height,
            width=width,
            seed=seed,
            train_domains=tuple(train_domains),
            test_domains=tuple(test_domains),
        )
        self.dataset_dir = osp.abspath(osp.join(root, "synthetic_reid", self.params.signature()))
        generate_synthetic_reid(self.dataset_dir, self.params, verbose=kwargs.get("verbose", True))
        images = load_meta(self.dataset_dir)["images"]

        self.meta = {osp.join(self.dataset_dir, rel): info for rel, info in sorted(images.items())}
        self.captions = {path: info["caption"] for path, info in self.meta.items()}
        self.domains = {path: info["domain"] for path, info in self.meta.items()}
        train, query, gallery = [], [], []
        for path, info in self.meta.items():
            folder = osp.basename(osp.dirname(path))
            if folder == TRAIN_DIR:
                train.append((path, f"{self.dataset_name}_{info['pid']}", f"{self.dataset_name}_{info['camid']}"))
            else:
                (query if folder == QUERY_DIR else gallery).append((path, info["pid"], info["camid"]))
        super().__init__(train, query, gallery, **kwargs)


def add_synthetic_config(cfg: CfgNode) -> None:
    """Adds ``cfg.DATASETS.SYNTHETIC`` (the :class:`SyntheticReID` parameters) with their defaults.

    Args:
        cfg: A FastReID config; modified in place.
    """
    defaults = SyntheticParams()
    _C = cfg
    _C.DATASETS.SYNTHETIC = CfgNode()
    # Identities in the training split.
    _C.DATASETS.SYNTHETIC.NUM_TRAIN_IDS = defaults.num_train_ids
    # Identities in the query / gallery split (disjoint from the training ones).
    _C.DATASETS.SYNTHETIC.NUM_TEST_IDS = defaults.num_test_ids
    # Cameras per domain (at most 9; at most 6 to also read the data with FastReID's Market1501 loader).
    _C.DATASETS.SYNTHETIC.NUM_CAMERAS = defaults.num_cameras
    # Cameras each identity appears in (2 .. NUM_CAMERAS).
    _C.DATASETS.SYNTHETIC.CAMERAS_PER_ID = defaults.cameras_per_id
    # Images of an identity per camera it appears in.
    _C.DATASETS.SYNTHETIC.IMAGES_PER_ID_CAMERA = defaults.images_per_id_camera
    # Visually distinct domains (background palette, colour temperature, contrast, noise, blur).
    _C.DATASETS.SYNTHETIC.NUM_DOMAINS = defaults.num_domains
    # Generation seed: the data set is a deterministic function of these keys.
    _C.DATASETS.SYNTHETIC.SEED = defaults.seed
    # Domains the training / test identities are filmed in (() = every domain). Disjoint lists make a
    # domain-generalisation split, e.g. NUM_DOMAINS 4, TRAIN_DOMAINS (0, 1, 2), TEST_DOMAINS (3,).
    _C.DATASETS.SYNTHETIC.TRAIN_DOMAINS = ()
    _C.DATASETS.SYNTHETIC.TEST_DOMAINS = ()


def synthetic_kwargs_from_cfg(cfg: CfgNode) -> dict:
    """Maps ``cfg.DATASETS.SYNTHETIC`` to :class:`SyntheticReID` constructor keyword arguments.

    Args:
        cfg: A config extended by :func:`add_synthetic_config`.

    Returns:
        ``{"num_train_ids": int, "num_test_ids": int, "num_cameras": int, "cameras_per_id": int,
        "images_per_id_camera": int, "num_domains": int, "seed": int, "train_domains": tuple,
        "test_domains": tuple}``.
    """
    node = cfg.DATASETS.SYNTHETIC
    return {
        "num_train_ids": node.NUM_TRAIN_IDS,
        "num_test_ids": node.NUM_TEST_IDS,
        "num_cameras": node.NUM_CAMERAS,
        "cameras_per_id": node.CAMERAS_PER_ID,
        "images_per_id_camera": node.IMAGES_PER_ID_CAMERA,
        "num_domains": node.NUM_DOMAINS,
        "seed": node.SEED,
        "train_domains": tuple(node.TRAIN_DOMAINS),
        "test_domains": tuple(node.TEST_DOMAINS),
    }
