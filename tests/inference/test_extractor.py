"""FeatureExtractor: the ``--eval-only`` feature for every tiny config and inference mode, input types, SIE camera
ids, flip-test, run folders and weight-file errors."""

import os

import numpy as np
import pytest
import torch
from fastreid.evaluation.evaluator import DatasetEvaluator, inference_on_dataset
from PIL import Image

from inference_helpers import cached_run, config_id, inference_modes, load_tool, make_run, synthetic_configs
from fastreid_clip.checkpoint import load_model_weights, read_training_checkpoint
from fastreid_clip.checkpoint.files import CheckpointError
from fastreid_clip.config import ConfigValueError, get_cfg, merge_config_file
from fastreid_clip.engine import ClipTrainer
from fastreid_clip.inference import FeatureExtractor

CASES = [(c, mode, opts) for c in synthetic_configs() for mode, opts in inference_modes(c)]


class _Capture(DatasetEvaluator):
    """Keeps what the model returned for every batch, as the evaluator receives it."""

    def reset(self):
        self.feats, self.camids = [], []

    def process(self, inputs, outputs):
        self.feats.append(outputs.float().cpu())
        self.camids.append(inputs["camids"])

    def evaluate(self):
        return torch.cat(self.feats)


def _eval_only_features(run_dir, weights, opts):
    """The features ``tools/train_net.py --eval-only`` computes: its own setup steps, ClipTrainer's test loader and
    FastReID's ``inference_on_dataset`` (the function ``DefaultTrainer.test`` runs)."""
    train_net = load_tool("train_net")
    cfg = merge_config_file(get_cfg(), os.path.join(run_dir, "config.yaml"), ["MODEL.WEIGHTS", weights, *opts])
    state = read_training_checkpoint(weights)
    train_net.fill_shapes_from_checkpoint(cfg, state)
    cfg.freeze()
    model = ClipTrainer.build_model(cfg)
    load_model_weights(model, weights, state=state)
    loader, _ = ClipTrainer.build_test_loader(cfg, cfg.DATASETS.TESTS[0])
    feats = inference_on_dataset(model, loader, _Capture(), flip_test=cfg.TEST.FLIP.ENABLED)
    items = loader.dataset.img_items
    return feats, [it[0] for it in items], [int(it[2]) for it in items]


@pytest.mark.parametrize("config,mode,mode_opts", CASES, ids=[f"{config_id(c)}-{m}" for c, m, _ in CASES])
def test_features_equal_eval_only(config, mode, mode_opts, datasets_root, tmp_path):
    run_dir, weights = cached_run(config)
    expected, paths, camids = _eval_only_features(run_dir, weights, mode_opts)
    extractor = FeatureExtractor.from_run_dir(run_dir, opts=mode_opts, batch_size=13)
    got = extractor(paths, camids=camids)
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # The agreement is far closer than the features of two different images are to each other.
    err = (got - expected).abs().max()
    assert err * 10 < (got[0] - got[-1]).abs().max()
    assert extractor.feature_dim == got.shape[1]


def test_input_types_flip_and_sie(datasets_root, tmp_path):
    run_dir, weights = cached_run("configs/Synthetic/clip_baseline_vit_tiny.yml", "MODEL.BACKBONE.SIE_CAMERA", "True",
                                  "TEST.FLIP.ENABLED", "True")
    expected, paths, camids = _eval_only_features(run_dir, weights, [])  # flip-test and SIE, as evaluated
    extractor = FeatureExtractor.from_config(os.path.join(run_dir, "config.yaml"), weights)
    assert extractor.flip_test
    paths, camids, expected = paths[:5], camids[:5], expected[:5]
    torch.testing.assert_close(extractor(paths, camids), expected, rtol=1e-5, atol=1e-5)
    pil = [Image.open(p).convert("RGB") for p in paths]
    arrays = [np.asarray(im) for im in pil]
    tensors = torch.stack([extractor.preprocess(p) for p in paths])
    for inputs in (pil, arrays, tensors):
        torch.testing.assert_close(extractor(inputs, camids), expected, rtol=1e-5, atol=1e-5)
    one = extractor(paths[0], camids=camids[0])
    torch.testing.assert_close(one, expected[:1], rtol=1e-5, atol=1e-5)
    # The camera id matters with SIE, and a missing one is an error that says so.
    other = extractor(paths[:1], camids=[(camids[0] + 1) % 4])
    assert (other - expected[:1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="SIE camera embedding is enabled but the batch has no 'camids'"):
        extractor(paths[:1])
    with pytest.raises(ValueError, match="got 2 camera ids for 5 images"):
        extractor(paths, camids=[0, 1])
    # Flip-test off: a different (unflipped) feature.
    plain = FeatureExtractor.from_config(os.path.join(run_dir, "config.yaml"), weights, flip_test=False)
    assert (plain(paths[:1], camids[:1]) - expected[:1]).abs().max() > 1e-5


def test_amp_features_close(datasets_root, tmp_path):
    run_dir, _ = cached_run("configs/Synthetic/clip_baseline_vit_tiny.yml")
    full = FeatureExtractor.from_run_dir(run_dir)
    amp = FeatureExtractor.from_run_dir(run_dir, amp=True)
    images = torch.rand(4, 3, 256, 128) * 255
    a, b = full(images), amp(images)
    assert b.dtype == torch.float32
    cosine = (torch.nn.functional.normalize(a, dim=1) * torch.nn.functional.normalize(b, dim=1)).sum(1)
    assert cosine.min() > 0.99 and (a - b).abs().max() > 0  # bfloat16 ran, and stays close


def test_weight_file_errors_name_the_file(tmp_path):
    run_dir, weights = make_run("configs/Synthetic/clip_baseline_vit_tiny.yml", str(tmp_path / "run"))
    config = os.path.join(run_dir, "config.yaml")
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match=f"'{missing}' does not exist"):
        FeatureExtractor.from_config(config, missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=f"'{garbage}'.*cannot be read"):
        FeatureExtractor.from_config(config, str(garbage))
    # Weights of another architecture (the RN config's model into the ViT config).
    _, rn_weights = cached_run("configs/Synthetic/clip_baseline_rn_tiny.yml")
    with pytest.raises(ValueError, match=f"checkpoint '{rn_weights}' .*does not fit the configured model"):
        FeatureExtractor.from_config(config, rn_weights)
    # CLIP backbone weights are not a trained model.
    clip_file = "weights/synthetic_clip/ViT-Tiny-16-synthetic.safetensors"
    bare = tmp_path / "clip.pth"
    from safetensors.torch import load_file

    torch.save(load_file(clip_file), bare)
    with pytest.raises(ConfigValueError, match="looks like CLIP backbone weights"):
        FeatureExtractor.from_config(config, str(bare))
    os.remove(weights)
    with pytest.raises(FileNotFoundError, match=f"'{run_dir}' has no model_final.pth"):
        FeatureExtractor.from_run_dir(run_dir)
    with pytest.raises(FileNotFoundError, match="has no config.yaml"):
        FeatureExtractor.from_run_dir(str(tmp_path))
