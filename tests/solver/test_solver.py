"""CLIP-ReID's optimizer groups and per-epoch schedule."""

import pytest
import torch

from fastreid_clip.config import get_cfg
from fastreid_clip.config.stages import solver_stage
from fastreid_clip.solver import WarmupMultiStepEpochLR, clip_param_groups, warmup_multistep_factor


def test_vit_stage2_multipliers_match_reference_values():
    expected = {1: 0.19, 5: 0.55, 9: 0.91, 10: 1.0, 29: 1.0, 30: 0.1, 49: 0.1, 50: 0.01, 60: 0.01}
    for epoch, value in expected.items():
        assert warmup_multistep_factor(epoch, [30, 50], 0.1, 0.1, 10) == pytest.approx(value)


def test_scheduler_is_constant_within_epoch_and_steps_per_epoch():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=5e-6)
    sched = WarmupMultiStepEpochLR(opt, [30, 50], 0.1, 0.1, 10)
    lrs = []
    for _ in range(60):  # FastReID's LRScheduler hook steps lr_sched once after every epoch
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.19 * 5e-6)  # epoch 1 already runs at 9.5e-7
    assert lrs[9] == pytest.approx(5e-6) and lrs[29] == pytest.approx(5e-7) and lrs[59] == pytest.approx(5e-8)
    state = sched.state_dict()
    restored = WarmupMultiStepEpochLR(torch.optim.Adam([param], lr=5e-6), [30, 50], 0.1, 0.1, 10)
    restored.load_state_dict(state)
    assert restored.last_epoch == 60


def test_bias_parameters_get_factor_including_in_proj_bias():
    layer = torch.nn.MultiheadAttention(8, 2)
    groups = clip_param_groups(layer, base_lr=1e-3, weight_decay=1e-4, bias_lr_factor=2.0, weight_decay_bias=0.0)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(layer.in_proj_bias)]["lr"] == pytest.approx(2e-3)
    assert by_param[id(layer.in_proj_bias)]["weight_decay"] == 0.0
    assert by_param[id(layer.in_proj_weight)]["lr"] == pytest.approx(1e-3)
    exact = clip_param_groups(layer, 1e-3, 1e-4, 2.0, 0.0, bias_match="exact")
    assert {id(p): g["lr"] for g in exact for p in g["params"]}[id(layer.in_proj_bias)] == pytest.approx(1e-3)


def test_frozen_parameters_are_left_out():
    bn = torch.nn.BatchNorm1d(4)
    bn.bias.requires_grad_(False)
    params = [p for g in clip_param_groups(bn, 1e-3, 0.0) for p in g["params"]]
    assert len(params) == 1 and params[0] is bn.weight


def test_epoch_scheduler_rejects_iteration_warmup():
    cfg = get_cfg()
    cfg.SOLVER.SCHED = "WarmupMultiStepEpochLR"
    cfg.SOLVER.WARMUP_ITERS = 1000
    with pytest.raises(ValueError, match="WARMUP_ITERS 0"):
        solver_stage(cfg)
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.SCHED = "MultiStepLR"  # FastReID's per-iteration-warm-up scheduler
    with pytest.raises(ValueError, match="MultiStepLR"):
        solver_stage(cfg)
