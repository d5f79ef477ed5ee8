"""Per-module learning-rate factors (``SOLVER.LR_FACTORS``, ``STAGES.<NAME>.LR_FACTORS``)."""

import pytest
import torch
import torch.nn as nn

from conftest import tiny_cfg
from fastreid_clip.config import ConfigValueError, get_cfg
from fastreid_clip.config.stages import StageSpec, add_stage_config, solver_stage, stage_specs
from fastreid_clip.solver import build_stage_optimizer, build_stage_scheduler, clip_param_groups
from fastreid_clip.solver.optimizer import lr_factor_of

TWO_STAGE = "configs/Synthetic/clip_reid_vit_tiny.yml"


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.head = nn.Linear(4, 2)
        self.head_proj = nn.Linear(4, 2)
        self.mim = nn.ModuleDict({"cross": nn.Linear(4, 4), "blocks": nn.Linear(4, 4)})


def _lrs(groups):
    return {id(p): g["lr"] for g in groups for p in g["params"]}


def test_longest_prefix_wins_by_whole_components_and_bias_factor_multiplies():
    model = Toy()
    factors = (("mim", 10.0), ("mim.cross", 3.0), ("head", 5.0))
    assert lr_factor_of("mim.cross.weight", factors) == 3.0  # longest prefix
    assert lr_factor_of("mim.blocks.weight", factors) == 10.0
    assert lr_factor_of("head.weight", factors) == 5.0
    assert lr_factor_of("head_proj.weight", factors) == 1.0  # "head" is not a component prefix of head_proj
    assert lr_factor_of("backbone.0.weight", factors) == 1.0
    lrs = _lrs(clip_param_groups(model, 1e-3, 1e-4, bias_lr_factor=2.0, lr_factors=factors))
    assert lrs[id(model.mim["cross"].weight)] == pytest.approx(3e-3)
    assert lrs[id(model.mim["cross"].bias)] == pytest.approx(6e-3)  # x factor x bias factor
    assert lrs[id(model.mim["blocks"].bias)] == pytest.approx(2e-2)
    assert lrs[id(model.head.weight)] == pytest.approx(5e-3)
    assert lrs[id(model.head_proj.weight)] == pytest.approx(1e-3)
    assert lrs[id(model.backbone[1].bias)] == pytest.approx(2e-3)


def test_empty_factors_give_exactly_the_previous_groups():
    model = Toy()
    plain = clip_param_groups(model, 1e-3, 1e-4, 2.0, 0.0)
    empty = clip_param_groups(model, 1e-3, 1e-4, 2.0, 0.0, lr_factors=())
    ones = clip_param_groups(model, 1e-3, 1e-4, 2.0, 0.0, lr_factors=(("head", 1.0),))
    for groups in (empty, ones):
        assert [(g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in groups] == \
            [(g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in plain]
    assert len(plain) == 2  # weights, biases


def test_solver_key_reaches_the_optimizer_and_the_schedule_scales_every_group():
    cfg = get_cfg()
    cfg.SOLVER.SCHED, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.DELAY_EPOCHS = "WarmupMultiStepEpochLR", 0, 0
    cfg.SOLVER.OPT, cfg.SOLVER.BASE_LR, cfg.SOLVER.BIAS_LR_FACTOR = "Adam", 1e-3, 2.0
    cfg.SOLVER.STEPS, cfg.SOLVER.WARMUP_EPOCHS, cfg.SOLVER.WARMUP_FACTOR = [2], 0, 1.0
    cfg.SOLVER.LR_FACTORS = [["head", 10.0]]
    stage = solver_stage(cfg)
    assert stage.lr_factors == (("head", 10.0),)
    model = Toy()
    optimizer = build_stage_optimizer(model, stage)
    scheduler = build_stage_scheduler(optimizer, stage)
    head_group = next(g for g in optimizer.param_groups if any(p is model.head.weight for p in g["params"]))
    other = next(g for g in optimizer.param_groups if any(p is model.backbone[0].weight for p in g["params"]))
    assert (head_group["lr"], other["lr"]) == pytest.approx((1e-2, 1e-3))
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert (head_group["lr"], other["lr"]) == pytest.approx((1e-3, 1e-4))  # x0.1 at epoch 2, ratio kept


def test_stage_node_key_round_trips_through_add_stage_config():
    cfg = get_cfg()
    add_stage_config(cfg, "extra", EPOCHS=2, LR_FACTORS=(("mim", 10.0),))
    assert cfg.STAGES.EXTRA.LR_FACTORS == [["mim", 10.0]]
    cfg.STAGES.NAMES = ("extra",)
    (spec,) = stage_specs(cfg)
    assert spec.lr_factors == (("mim", 10.0),)
    cfg.STAGES.IMAGE.LR_FACTORS = [["backbone", 0.5]]  # CLIP-ReID's node got the key too (default [])
    assert get_cfg().STAGES.IMAGE.LR_FACTORS == [] and get_cfg().SOLVER.LR_FACTORS == []


def test_command_line_override_of_a_stage_node():
    cfg = tiny_cfg("unused", "STAGES.IMAGE.LR_FACTORS", '[["head", 4.0], ["head_proj", 2.0]]', config=TWO_STAGE)
    image = next(s for s in stage_specs(cfg) if s.name == "image")
    assert image.lr_factors == (("head", 4.0), ("head_proj", 2.0))


@pytest.mark.parametrize("value,needle", [
    ([["head"]], "not a [prefix, factor] pair"),
    ([["head", 0.0]], "the factor of 'head' is 0.0"),
    ([["head", -1.0]], "the factor of 'head' is -1.0"),
    ([["", 2.0]], "is not a module-name prefix"),
    ([["head.", 2.0]], "is not a module-name prefix"),
    ([["head", 2.0], ["head", 3.0]], "'head' is listed twice"),
    ("head", "expected pairs"),
    ([["head", "x"]], "the factor of 'head'"),
])
def test_bad_values_name_the_key(value, needle):
    cfg = get_cfg()
    cfg.SOLVER.SCHED, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.DELAY_EPOCHS = "WarmupMultiStepEpochLR", 0, 0
    cfg.SOLVER.LR_FACTORS = value
    with pytest.raises(ConfigValueError) as info:
        solver_stage(cfg)
    assert str(info.value).startswith(f"SOLVER.LR_FACTORS = {value!r}: expected pairs [module-name prefix, lr factor")
    assert needle in str(info.value)
    with pytest.raises(ConfigValueError, match=r"^STAGES.IMAGE.LR_FACTORS = "):
        StageSpec(name="image", epochs=1, lr_factors=value)


def test_prefix_that_matches_no_parameter_names_the_key_and_the_modules():
    stage = StageSpec(name="image", epochs=1, lr_factors=(("hed", 10.0),))
    with pytest.raises(ConfigValueError, match=r"STAGES.IMAGE.LR_FACTORS = \[\['hed', 10.0\]\]: expected prefixes.*"
                                               r"'hed' matches no parameter of Toy.*backbone, head, head_proj, mim"):
        build_stage_optimizer(Toy(), stage)


def test_frozen_parameters_stay_out_whatever_their_factor():
    model = Toy()
    for p in model.mim.parameters():
        p.requires_grad_(False)
    groups = clip_param_groups(model, 1e-3, 0.0, lr_factors=(("mim", 10.0),))
    params = {id(p) for g in groups for p in g["params"]}
    assert not params & {id(p) for p in model.mim.parameters()}
    assert sorted(g["lr"] for g in groups) == pytest.approx([1e-3, 2e-3])


def test_fastreid_default_trainer_optimizer_uses_the_factors():
    from fastreid_clip.engine.fastreid_trainer import build_clip_optimizer

    cfg = tiny_cfg("unused", "SOLVER.LR_FACTORS", '[["head", 10.0]]')
    model = Toy()
    optimizer, _ = build_clip_optimizer(cfg, model)
    lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lrs[id(model.head.weight)] == pytest.approx(10 * cfg.SOLVER.BASE_LR)
    assert lrs[id(model.head_proj.weight)] == pytest.approx(cfg.SOLVER.BASE_LR)
    torch.testing.assert_close(torch.tensor(lrs[id(model.head.bias)]),
                               torch.tensor(10 * cfg.SOLVER.BASE_LR * cfg.SOLVER.BIAS_LR_FACTOR))
