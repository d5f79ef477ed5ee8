"""Bad config values and input files fail early, naming the key (or file / flag), the value and what was expected.

One test per row of docs/bad_inputs.md. Checks run at the function level where possible; anything that used to
hang is called in a form that cannot (the sampler directly, or a check that fires before any batch is drawn).
"""

import importlib.util
import os
import re
import types

import pytest
import torch
import torch.nn as nn

from conftest import tiny_cfg
from fastreid_clip.config import ConfigValueError, validate_train_config
from fastreid_clip.config.stages import StageSpec, solver_stage, stage_specs
from fastreid_clip.config.validate import check_trainable_prefixes, pk_num_instances
from fastreid_clip.data.epoch_data import FeatureEpochs, ImageEpochs
from fastreid_clip.data.samplers import pk_batches, random_batches

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASELINE = "configs/Synthetic/clip_baseline_vit_tiny.yml"
TWO_STAGE = "configs/Synthetic/clip_reid_vit_tiny.yml"


def _tool(name):
    spec = importlib.util.spec_from_file_location(f"{name}_tool", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _raises(fn, *needles, error=ConfigValueError):
    """``fn()`` raises ``error`` whose message contains every needle; the message is returned."""
    with pytest.raises(error) as info:
        fn()
    message = str(info.value.code if isinstance(info.value, SystemExit) else info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


# ------------------------------------------------------------------------------------------- 1. batch sizes
def test_zero_batch_size_is_rejected_by_the_samplers():
    """Before: pk_batches(batch_size=0) looped forever (memory growing); random_batches raised range()'s error."""
    pids = [i // 4 for i in range(64)]
    _raises(lambda: pk_batches(pids, 4, 0, seed=0, epoch=0), "batch_size", "0", error=ValueError)
    _raises(lambda: pk_batches(pids, 0, 16, seed=0, epoch=0), "NUM_INSTANCE", "0", error=ValueError)
    _raises(lambda: random_batches(64, 0, seed=0, epoch=0), "batch_size", "0", error=ValueError)
    _raises(lambda: random_batches(64, -8, seed=0, epoch=0), "batch_size", "-8", error=ValueError)
    assert random_batches(0, 8, seed=0, epoch=0) == []  # no items: no batches (was an IndexError)
    _raises(lambda: FeatureEpochs(torch.zeros(4, 2), torch.zeros(4), 0, seed=0), "batch size", "0", error=ValueError)


def test_zero_ims_per_batch_names_the_solver_key():
    cfg = tiny_cfg("unused", "SOLVER.IMS_PER_BATCH", "0")
    _raises(lambda: stage_specs(cfg), "SOLVER.IMS_PER_BATCH = 0", "positive")


def test_zero_stage_ims_per_batch_names_the_stage_key():
    cfg = tiny_cfg("unused", "STAGES.PROMPT.IMS_PER_BATCH", "0", config=TWO_STAGE)
    _raises(lambda: stage_specs(cfg), "STAGES.PROMPT.IMS_PER_BATCH = 0", "positive")


# -------------------------------------------------------------------------------------- 2. PK sampler keys
def test_zero_num_instance_is_an_error_unless_the_sampler_is_random():
    """Before: NUM_INSTANCE 0 silently switched the PK sampler to random batches."""
    cfg = tiny_cfg("unused", "DATALOADER.NUM_INSTANCE", "0")
    message = _raises(lambda: validate_train_config(cfg), "DATALOADER.NUM_INSTANCE = 0", "NaiveIdentitySampler",
                      "TrainingSampler")
    assert "positive" in message
    stage = solver_stage(cfg)
    _raises(lambda: ImageEpochs.instances_for(cfg, stage), "DATALOADER.NUM_INSTANCE = 0")  # what the trainer calls
    cfg.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
    assert ImageEpochs.instances_for(cfg, stage) == 0  # random batches, as asked


def test_batch_not_a_multiple_of_num_instance_names_both_keys():
    cfg = tiny_cfg("unused", "SOLVER.IMS_PER_BATCH", "30")
    _raises(lambda: pk_num_instances(cfg, solver_stage(cfg)), "SOLVER.IMS_PER_BATCH = 30",
            "DATALOADER.NUM_INSTANCE = 4")
    cfg = tiny_cfg("unused", "STAGES.IMAGE.IMS_PER_BATCH", "30", config=TWO_STAGE)
    _raises(lambda: validate_train_config(cfg), "STAGES.IMAGE.IMS_PER_BATCH = 30", "DATALOADER.NUM_INSTANCE = 4")


def test_unknown_sampler_is_named():
    cfg = tiny_cfg("unused", "DATALOADER.SAMPLER_TRAIN", "NaiveIdentitySampeler")
    _raises(lambda: validate_train_config(cfg), "DATALOADER.SAMPLER_TRAIN = 'NaiveIdentitySampeler'",
            "Did you mean 'NaiveIdentitySampler'")


# ------------------------------------------------------------------------------------------- 3. datasets
def test_unknown_training_dataset_lists_the_registered_names():
    """Before: TypeError "'Registry' object is not iterable" from inside the error message."""
    from fastreid_clip.data.build import build_dataset

    cfg = tiny_cfg("unused", "DATASETS.NAMES", "('Nope',)")
    _raises(lambda: validate_train_config(cfg), "DATASETS.NAMES = ('Nope',)", "SyntheticReID", "Market1501")
    _raises(lambda: build_dataset(cfg, "Nope"), "DATASETS.NAMES = ('Nope',)", "'Nope' is not", "SyntheticReID")


def test_unknown_test_dataset_names_datasets_tests():
    """Before: the same TypeError, and only after training had finished."""
    from fastreid_clip.data.build import build_clip_test_loader

    cfg = tiny_cfg("unused", "DATASETS.TESTS", "('SyntheticReid',)")
    _raises(lambda: validate_train_config(cfg), "DATASETS.TESTS = ('SyntheticReid',)", "Did you mean 'SyntheticReID'")
    _raises(lambda: build_clip_test_loader(cfg, "SyntheticReid"), "DATASETS.TESTS = ('SyntheticReid',)")


# ------------------------------------------------------------------------------------------- 4. ViT stride
@pytest.mark.parametrize("stride", ["(0, 0)", "(-4, 16)", "(32, 16)", "(16,)"])
def test_bad_vit_stride_names_the_key_and_the_patch_size(stride):
    """Before: (0, 0) ZeroDivisionError, (-4, 16) an interpolate error, (32, 16) silently skipped pixels."""
    from fastreid_clip.modeling.backbones import build_clip_backbone

    cfg = tiny_cfg("unused", "MODEL.BACKBONE.STRIDE_SIZE", stride)
    value = repr(tuple(cfg.MODEL.BACKBONE.STRIDE_SIZE))
    _raises(lambda: build_clip_backbone(cfg), f"MODEL.BACKBONE.STRIDE_SIZE = {value}", "patch size 16")
    _raises(lambda: validate_train_config(cfg), f"MODEL.BACKBONE.STRIDE_SIZE = {value}", "patch size 16")


# ------------------------------------------------------------------------------------- 5. single-stage keys
def test_single_stage_errors_name_solver_keys():
    """Before: SOLVER.MAX_EPOCH -1 was reported as STAGES.TRAIN.EPOCHS, a key that does not exist."""
    message = _raises(lambda: stage_specs(tiny_cfg("unused", "SOLVER.MAX_EPOCH", "-1")), "SOLVER.MAX_EPOCH = -1")
    assert "STAGES" not in message
    _raises(lambda: stage_specs(tiny_cfg("unused", "TEST.EVAL_PERIOD", "-2")), "TEST.EVAL_PERIOD = -2")
    _raises(lambda: stage_specs(tiny_cfg("unused", "STAGES.IMAGE.EPOCHS", "0", config=TWO_STAGE)),
            "STAGES.IMAGE.EPOCHS = 0")


# ----------------------------------------------------------------------------- 6. empty set / bare CLIP weights
def test_empty_training_set_names_the_datasets_and_the_root(tmp_path, monkeypatch):
    """Before: "num_classes must be positive" from the model constructor."""
    from fastreid_clip.data.build import build_clip_train_set

    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        os.makedirs(tmp_path / "Market-1501-v15.09.15" / sub)
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path))
    cfg = tiny_cfg("unused", "DATASETS.NAMES", "('Market1501',)", "DATASETS.TESTS", "('Market1501',)")
    _raises(lambda: build_clip_train_set(cfg), "DATASETS.NAMES = ('Market1501',)", str(tmp_path),
            "$FASTREID_DATASETS", "Market1501: 0 images")


def test_eval_only_with_bare_clip_weights_says_what_the_file_is(tiny_weights):
    """Before: "num_classes must be positive", the same message as for an empty training set."""
    path, model = tiny_weights["ViT-Tiny-16"]
    cfg = tiny_cfg("unused", "MODEL.WEIGHTS", path)
    train_net = _tool("train_net")
    _raises(lambda: train_net.fill_shapes_from_checkpoint(cfg, model.state_dict()), f"MODEL.WEIGHTS = '{path}'",
            "CLIP backbone weights", "a ViT with width 64", "model_final.pth", "MODEL.BACKBONE.PRETRAIN_PATH")


# ------------------------------------------------------------------------------ 7. converter and damaged files
@pytest.fixture
def bad_files(tmp_path, tiny_weights):
    whole = open(tiny_weights["ViT-Tiny-16"][0], "rb").read()
    files = {"truncated.pth": whole[: len(whole) // 2], "random.pth": os.urandom(5000), "empty.pth": b""}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    import argparse

    torch.save({"model": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "objects.pth")
    return tmp_path


@pytest.mark.parametrize("name,says", [("truncated.pth", "it is a truncated or damaged zip archive"),
                                       ("random.pth", "it is not a torch checkpoint"),
                                       ("empty.pth", "is empty (0 bytes)")])
def test_converter_calls_damaged_files_damaged(bad_files, name, says):
    """Before: every unreadable file got "holds pickled objects besides tensors ... re-run with --trust-pickle"."""
    tool = _tool("convert_clipreid")
    path = str(bad_files / name)
    size = os.path.getsize(path)
    message = _raises(lambda: tool.load_checkpoint(path), f"'{path}'", says, error=SystemExit)
    assert "--trust-pickle" not in message
    if size:
        assert f"{size:,} bytes" in message


def test_converter_suggests_trust_pickle_only_for_object_pickles(bad_files):
    tool = _tool("convert_clipreid")
    path = str(bad_files / "objects.pth")
    _raises(lambda: tool.load_checkpoint(path), f"'{path}'", "argparse.Namespace", "--trust-pickle",
            error=SystemExit)
    assert tool.load_checkpoint(path, trust_pickle=True)["w"].shape == (2,)


# --------------------------------------------------------------------------- 8. optimizer, test batch, smoothing
@pytest.mark.parametrize("config,key,value", [
    (BASELINE, "SOLVER.BASE_LR", "-0.1"),
    (BASELINE, "SOLVER.WEIGHT_DECAY", "-0.0001"),
    (BASELINE, "SOLVER.BIAS_LR_FACTOR", "-1.0"),
    (BASELINE, "SOLVER.GAMMA", "0.0"),
    (TWO_STAGE, "STAGES.IMAGE.BASE_LR", "-0.1"),
    (TWO_STAGE, "STAGES.PROMPT.WEIGHT_DECAY", "-0.0001"),
    (TWO_STAGE, "STAGES.IMAGE.BIAS_LR_FACTOR", "-2.0"),
    (TWO_STAGE, "STAGES.IMAGE.GAMMA", "-0.1"),
    (TWO_STAGE, "STAGES.PROMPT.EPOCHS", "0"),
])
def test_bad_optimizer_and_schedule_values_name_the_key(config, key, value):
    """Before: torch's "Invalid learning rate: -0.1" at the stage start (naming no key), or silently accepted."""
    cfg = tiny_cfg("unused", key, value, config=config)
    _raises(lambda: stage_specs(cfg), f"{key} = {value}: expected")


def test_zero_test_batch_names_the_key_where_test_and_cache_loaders_are_built():
    """Before: torch's "batch_size should be a positive integer value" after training, naming no key."""
    from fastreid_clip.data.build import build_clip_test_loader
    from fastreid_clip.engine.feature_cache import cache_train_features

    cfg = tiny_cfg("unused", "TEST.IMS_PER_BATCH", "0")
    _raises(lambda: validate_train_config(cfg), "TEST.IMS_PER_BATCH = 0")
    _raises(lambda: build_clip_test_loader(cfg, "SyntheticReID"), "TEST.IMS_PER_BATCH = 0")
    train_set = types.SimpleNamespace(img_items=[("unused.jpg", "synthetic_0", "synthetic_0")])
    _raises(lambda: cache_train_features(cfg, train_set, None, nn.Linear(1, 1), torch.device("cpu")),
            "TEST.IMS_PER_BATCH = 0")


@pytest.mark.parametrize("key", ["MODEL.LOSSES.CE.EPSILON", "MODEL.LOSSES.I2T.EPSILON"])
def test_label_smoothing_must_be_below_one(key):
    """Before: EPSILON 1.0 was accepted (the loss no longer sees the target)."""
    from fastreid.modeling.meta_arch import build_model

    cfg = tiny_cfg("unused", key, "1.0", "MODEL.HEADS.NUM_CLASSES", "4", config=TWO_STAGE)
    _raises(lambda: validate_train_config(cfg), f"{key} = 1.0", "[0, 1)")
    _raises(lambda: build_model(cfg), f"{key} = 1.0", "[0, 1)")  # the meta-architecture's own check


# ------------------------------------------------------------------------------------ 9. TRAINABLE prefixes
class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(2, 2))
        self.head = nn.Linear(2, 2)
        self.head_proj = nn.Linear(2, 2)


def test_trainable_prefix_matching_nothing_names_the_key_and_the_closest_module():
    """Before: a typo froze the backbone silently and training "succeeded"."""
    stage = StageSpec(name="image", epochs=1, trainable=("bakbone", "head"))
    message = _raises(lambda: check_trainable_prefixes(_Model(), stage),
                      "STAGES.IMAGE.TRAINABLE = ('bakbone', 'head')", "'bakbone' matches no parameter",
                      "Did you mean 'backbone'", "backbone, head, head_proj")
    assert re.search(r"top-level modules: backbone, head, head_proj\)", message)
    check_trainable_prefixes(_Model(), StageSpec(name="image", epochs=1, trainable=("backbone.0", "head")))
    _raises(lambda: check_trainable_prefixes(_Model(), StageSpec(name="image", epochs=1, trainable=("backbone.1",))),
            "'backbone.1' matches no parameter", "Did you mean 'backbone.0'")


def test_trainer_checks_every_stage_prefix_before_the_first_stage_trains(datasets_root, tmp_path):
    from fastreid_clip.engine import ClipTrainer

    cfg = tiny_cfg(str(tmp_path), "STAGES.IMAGE.TRAINABLE", "('bakbone', 'head', 'head_proj')",
                   "STAGES.PROMPT.EPOCHS", "1", "STAGES.IMAGE.EPOCHS", "1", config=TWO_STAGE)
    trainer = ClipTrainer(cfg)
    calls = []
    trainer._stage_data = lambda stage: calls.append(stage)  # never reached
    _raises(trainer.train, "STAGES.IMAGE.TRAINABLE", "'bakbone'", "Did you mean 'backbone'")
    assert calls == []


# ------------------------------------------------------------------------------------------ end to end
def test_trainer_fails_before_generating_any_data(tmp_path, monkeypatch):
    """The checks run at the start of build_clip_train_set: nothing is generated, read or built."""
    from fastreid_clip.engine import ClipTrainer

    root = tmp_path / "datasets"
    root.mkdir()
    monkeypatch.setenv("FASTREID_DATASETS", str(root))
    cfg = tiny_cfg(str(tmp_path / "out"), "DATALOADER.NUM_INSTANCE", "0", "SOLVER.MAX_EPOCH", "1")
    _raises(lambda: ClipTrainer(cfg), "DATALOADER.NUM_INSTANCE = 0")
    assert os.listdir(root) == []


def test_config_value_error_format_and_pickling():
    import pickle

    err = ConfigValueError("SOLVER.BASE_LR", -0.1, "a learning rate > 0", "Set a positive lr")
    assert str(err) == "SOLVER.BASE_LR = -0.1: expected a learning rate > 0. Set a positive lr"
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.key == "SOLVER.BASE_LR"
    assert validate_train_config(tiny_cfg("unused")) is None
    assert validate_train_config(tiny_cfg("unused", config=TWO_STAGE)) is None
