"""SOLVER.OPT_IMPL: the fused, foreach and for-loop optimizer kernels give the same update."""

import pytest
import torch

from fastreid_clip.config import ConfigValueError
from fastreid_clip.config.stages import StageSpec
from fastreid_clip.solver import build_stage_optimizer


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4))


def _train(impl: str, opt: str = "Adam", steps: int = 5):
    model = _model()
    stage = StageSpec(name="train", epochs=1, opt=opt, base_lr=1e-2, weight_decay=1e-4, lr_factors=(("2", 3.0),))
    optimizer = build_stage_optimizer(model, stage, impl=impl)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 16, generator=gen)
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return optimizer, torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("opt", ["Adam", "AdamW", "SGD"])
def test_implementations_agree(opt):
    reference = _train("for_loop", opt)[1]
    start = torch.cat([p.detach().flatten() for p in _model().parameters()])
    for impl in ("fused", "foreach"):
        optimizer, weights = _train(impl, opt)
        group = optimizer.param_groups[0]
        assert group.get("fused" if impl == "fused" else "foreach") is True
        assert not torch.equal(weights, start)  # the update did something
        torch.testing.assert_close(weights, reference, rtol=1e-5, atol=1e-6)


def test_for_loop_disables_both():
    optimizer, _ = _train("for_loop", steps=1)
    group = optimizer.param_groups[0]
    assert not group.get("fused") and group.get("foreach") is False


def test_lr_factors_survive_every_implementation():
    lrs = {impl: sorted({g["lr"] for g in _train(impl, steps=1)[0].param_groups}) for impl in ("fused", "for_loop")}
    assert lrs["fused"] == lrs["for_loop"] == pytest.approx([1e-2, 2e-2, 3e-2, 6e-2])


def test_unknown_implementation_names_the_key():
    with pytest.raises(ConfigValueError, match="SOLVER.OPT_IMPL.*fast.*fused"):
        _train("fast", steps=1)


def test_optimizer_without_fused_kernel_is_an_error_not_a_fallback():
    with pytest.raises(ConfigValueError, match="SOLVER.OPT_IMPL.*Adamax has no 'fused'"):
        build_stage_optimizer(_model(), StageSpec(name="train", epochs=1, opt="Adamax"), impl="fused")
