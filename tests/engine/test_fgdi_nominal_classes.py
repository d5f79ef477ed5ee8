"""MODEL.FGDI.NOMINAL_CLASSES (CLIP-FGDI P2: classifiers and text bank sized by the datasets' nominal class lists):
the trainer's class-count hook (a meta-arch ``num_train_classes``), the unused classes in their source's domain,
and the errors, on the three synthetic sources of the tiny FGDI config."""

import pytest
import torch

from conftest import tiny_cfg
from fastreid_clip.config.validate import ConfigValueError, validate_train_config
from fastreid_clip.data.build import build_clip_train_set
from fastreid_clip.engine import ClipTrainer
from fastreid_clip.modeling.meta_arch.clip_fgdi import ClipFGDI

CONFIG = "configs/Synthetic/clip_fgdi_vit_tiny.yml"
SMALL = ["DATASETS.SYNTHETIC.IMAGES_PER_ID_CAMERA", "2"]
EXTRA = (3, 0, 2)  # unused classes appended per source


def _cfg(out, *opts):
    return tiny_cfg(str(out), *SMALL, *opts, config=CONFIG)


@pytest.fixture(scope="module")
def train_counts(datasets_root, tmp_path_factory):
    """``(training identities per source, total)`` of the tiny config's training set."""
    train_set = build_clip_train_set(_cfg(tmp_path_factory.mktemp("nominal_counts")))
    counts = ClipFGDI.train_ids_per_source(train_set, 3)
    assert sum(counts) == train_set.num_classes and all(c > 0 for c in counts)
    return counts, train_set.num_classes


def _nominal(counts):
    return "(" + ", ".join(str(c + e) for c, e in zip(counts, EXTRA)) + ")"


def test_model_gets_the_nominal_classes_in_their_sources_domains(train_counts, tmp_path):
    counts, num_real = train_counts
    cfg = _cfg(tmp_path, "MODEL.FGDI.NOMINAL_CLASSES", _nominal(counts))
    cfg.freeze()
    trainer = ClipTrainer(cfg)
    model, total = trainer.raw_model, num_real + sum(EXTRA)
    assert trainer.cfg.MODEL.HEADS.NUM_CLASSES == total
    assert model.prompt_learner.num_ids == total
    assert model.head.classifier.weight.shape[0] == model.head_proj.classifier.weight.shape[0] == total
    # the training identities keep FastReID's labels 0..N-1 and their sources' domains
    train_set = trainer.train_set
    labels = torch.tensor([train_set.pid_dict[item[1]] for item in train_set.img_items])
    assert int(labels.max()) == num_real - 1
    assert torch.equal(model.identity_domains[labels], train_set.sample_fields["domains"])
    # the unused classes follow, source by source: 3 of domain 0, none of domain 1, 2 of domain 2
    assert model.identity_domains[num_real:].tolist() == [0, 0, 0, 2, 2]
    # the banks have a row per class; an unused class's domain-prompt row uses its own source's token
    model.set_stage("image")
    model.on_stage_start("image")
    assert model.text_bank.shape[0] == model.domain_bank.shape[0] == total
    last = torch.tensor([total - 1])
    own = model.encode_domain_prompts(last, torch.tensor([2])).float()
    other = model.encode_domain_prompts(last, torch.tensor([0])).float()
    assert torch.allclose(model.domain_bank[-1:], own, atol=1e-5)
    assert not torch.allclose(model.domain_bank[-1:], other, atol=1e-5)


def test_default_is_the_training_identities(train_counts, tmp_path):
    _, num_real = train_counts
    cfg = _cfg(tmp_path)
    train_set = build_clip_train_set(cfg)
    assert ClipFGDI.num_train_classes(cfg, train_set) == num_real
    assert ClipTrainer.auto_scale_for_dataset(cfg, train_set).MODEL.HEADS.NUM_CLASSES == num_real


def test_a_count_below_the_training_identities_names_key_source_and_numbers(train_counts, tmp_path):
    counts, _ = train_counts
    nominal = f"({counts[0]}, {counts[1] - 1}, {counts[2]})"
    cfg = _cfg(tmp_path, "MODEL.FGDI.NOMINAL_CLASSES", nominal)
    validate_train_config(cfg)  # length and type are fine: only the training set shows the problem
    train_set = build_clip_train_set(cfg)
    with pytest.raises(ConfigValueError) as err:
        ClipTrainer.auto_scale_for_dataset(cfg, train_set)
    message = str(err.value)
    assert err.value.key == "MODEL.FGDI.NOMINAL_CLASSES"
    assert "'SyntheticReIDDomain1'" in message and f"has {counts[1]} training identities" in message
    assert f"NOMINAL_CLASSES[1] = {counts[1] - 1}" in message


@pytest.mark.parametrize("value", ["(50, 50)", "(50, 50, 50, 50)", "(50, 0, 50)"])
def test_wrong_length_or_value_fails_before_data(value, tmp_path):
    with pytest.raises(ConfigValueError) as err:
        validate_train_config(_cfg(tmp_path, "MODEL.FGDI.NOMINAL_CLASSES", value))
    assert err.value.key == "MODEL.FGDI.NOMINAL_CLASSES" and "len(DATASETS.NAMES) = 3" in str(err.value)


def test_num_classes_that_disagrees_with_the_nominal_sum_is_named(tmp_path):
    from fastreid.modeling.meta_arch import build_model

    cfg = _cfg(tmp_path, "MODEL.FGDI.NOMINAL_CLASSES", "(4, 4, 4)", "MODEL.HEADS.NUM_CLASSES", "10",
               "MODEL.BACKBONE.NUM_CAMERAS", "2")
    with pytest.raises(ConfigValueError) as err:
        build_model(cfg)
    assert err.value.key == "MODEL.HEADS.NUM_CLASSES" and "= 12" in str(err.value)
