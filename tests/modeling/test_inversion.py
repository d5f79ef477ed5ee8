"""Inversion network f_theta (PromptSG §5.1) and the global-batch BatchNorm it ends with."""

import os
import sys

import pytest
import torch
import torch.nn as nn

from fastreid_clip.config import ConfigValueError, get_cfg
from fastreid_clip.modeling.inversion import GlobalBatchNorm1d, InversionNet
from numeric import assert_close_ulps


def test_three_layer_mlp_with_batchnorm_after_the_last_layer():
    net = InversionNet(in_dim=32, out_dim=64, hidden_dim=16, num_layers=3)
    linears = [m for m in net.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 16), (16, 16), (16, 64)]
    assert [type(m).__name__ for m in net.mlp] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert isinstance(net.bn, GlobalBatchNorm1d) and net.bn.num_features == 64
    assert net(torch.randn(5, 32)).shape == (5, 64)
    single = InversionNet(in_dim=8, out_dim=4, hidden_dim=99, num_layers=1, final_bn=False)
    assert [type(m).__name__ for m in single.mlp] == ["Linear"] and isinstance(single.bn, nn.Identity)


def test_from_config_paper_defaults_and_bad_values_name_the_key():
    cfg = get_cfg()
    net = InversionNet(cfg, in_dim=512, out_dim=512)
    assert [m.out_features for m in net.mlp if isinstance(m, nn.Linear)] == [512, 512, 512]
    # ~0.8 M parameters at ViT-B/16 width (notes §5.3)
    assert sum(p.numel() for p in net.parameters()) == 3 * 512 * 512 + 3 * 512 + 2 * 512
    cfg.MODEL.PROMPTSG.INVERSION.HIDDEN_DIM = 0
    with pytest.raises(ConfigValueError, match=r"^MODEL.PROMPTSG.INVERSION.HIDDEN_DIM = 0: expected an integer >= 1"):
        InversionNet(cfg, in_dim=512, out_dim=512)
    cfg.MODEL.PROMPTSG.INVERSION.HIDDEN_DIM = 512
    cfg.MODEL.PROMPTSG.INVERSION.NUM_LAYERS = 0
    with pytest.raises(ConfigValueError, match=r"^MODEL.PROMPTSG.INVERSION.NUM_LAYERS = 0"):
        InversionNet(cfg, in_dim=512, out_dim=512)


def test_eval_output_of_an_image_does_not_depend_on_its_batch():
    torch.manual_seed(0)
    net = InversionNet(in_dim=8, out_dim=6, hidden_dim=16)
    for _ in range(3):
        net(torch.randn(16, 8))  # running statistics
    net.eval()
    x = torch.randn(10, 8)
    with torch.no_grad():
        assert_close_ulps(net(x[:3]), net(x)[:3], 16)
    net.train()
    assert not torch.allclose(net(x[:3]), net(x)[:3])  # batch statistics in training


def test_global_batchnorm_is_batchnorm_in_a_single_process():
    torch.manual_seed(0)
    ours, plain = GlobalBatchNorm1d(5), nn.BatchNorm1d(5)
    plain.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(plain.state_dict())
    x = torch.randn(7, 5, requires_grad=True)
    out = ours(x)
    assert torch.equal(out, plain(x))
    assert torch.equal(ours.running_mean, plain.running_mean) and torch.equal(ours.running_var, plain.running_var)


def _two_rank_worker(rank, init_file, x, weights, result_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    bn = GlobalBatchNorm1d(x.shape[1])
    local = x[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
    out = bn(local)
    (out * weights[rank * 4:(rank + 1) * 4]).sum().backward()
    torch.save({"out": out.detach(), "grad": local.grad, "mean": bn.running_mean, "var": bn.running_var},
               os.path.join(result_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_global_batchnorm_under_two_gloo_ranks_equals_one_process_on_the_whole_batch(tmp_path):
    """Each rank normalises its 4 rows with the statistics of all 8; gradients and running stats match too."""
    import torch.multiprocessing as mp

    torch.manual_seed(1)
    x, weights = torch.randn(8, 3), torch.randn(8, 3)
    sys.path.insert(0, os.path.dirname(__file__))
    mp.spawn(_two_rank_worker, args=(str(tmp_path / "init"), x, weights, str(tmp_path)), nprocs=2, join=True)
    reference = nn.BatchNorm1d(3)
    xr = x.clone().requires_grad_(True)
    out = reference(xr)
    (out * weights).sum().backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # The same BN formula over the same 8 rows (gathered): equal up to rounding of a different reduction order.
    assert_close_ulps(torch.cat([r["out"] for r in ranks]), out, 16)
    assert_close_ulps(torch.cat([r["grad"] for r in ranks]), xr.grad, 64)
    for r in ranks:
        assert_close_ulps(r["mean"], reference.running_mean, 16)
        assert_close_ulps(r["var"], reference.running_var, 16)
