"""Runtime fixes that let the unmodified ``fastreid==1.4.0`` wheel run on torch 2 / Python 3.11 and on CPUs.

FastReID 1.4.0 was released for torch 1.13 and CUDA machines. Nothing in its installed files is edited:
:func:`apply` installs import shims *before* fastreid is first imported and then replaces a few functions
on fastreid's module objects. ``import fastreid_clip`` calls :func:`apply`, so users only have to import our
package before (or instead of) ``fastreid``.

Fixes, each idempotent:

* ``torch._six`` (removed in torch 2.0): a stand-in module with ``string_classes``/``int_classes``/``inf``.
* ``collections.Mapping`` & co. (removed in Python 3.10): aliases to ``collections.abc``.
* ``DataLoaderX`` creates a CUDA stream in ``__init__``: on machines without CUDA, a plain ``DataLoader``.
* ``ReidEvaluator._compile_dependencies`` runs ``make`` and calls ``sys.exit(1)`` when compilation fails:
  it now only checks that the Cython ranker imports and otherwise warns and uses the NumPy ranker.
* ``build_reid_test_loader`` hard-codes 4 workers: it now reads ``DATALOADER.NUM_WORKERS``.
* ``CommonMetricPrinter`` divides by zero when asked to write twice at the same iteration in a run
  shorter than the ``IterationTimer`` warm-up: the second write no longer estimates an ETA.
* ``launch`` forces NCCL and asserts CUDA: workers use gloo (and the CPU) when CUDA is not available.
* ``build_optimizer`` (``contiguous=True``, what ``DefaultTrainer`` uses) flattens the parameters into
  ``ContiguousParams`` buffers whose gradients are views of one buffer per group. torch 2's
  ``Optimizer.zero_grad()`` sets gradients to ``None`` by default: the optimizer then sees no gradient and never
  updates a weight while the per-parameter gradients accumulate. Such optimizers now zero in place
  (``set_to_none=False``, torch 1's default).
"""

from __future__ import annotations

import collections
import collections.abc
import importlib
import logging
import math
import os
import sys
import types
import warnings

__all__ = ["apply", "cuda_available"]

_APPLIED = False
logger = logging.getLogger(__name__)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _install_import_shims() -> None:
    """Make ``from torch._six import string_classes`` and ``from collections import Mapping`` work."""
    import torch

    if "torch._six" not in sys.modules:
        six = types.ModuleType("torch._six")
        six.string_classes = (str, bytes)
        six.int_classes = (int,)
        six.inf = math.inf
        six.nan = math.nan
        six.container_abcs = collections.abc
        sys.modules["torch._six"] = six
        torch._six = six
    for name in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))


def _patch_data_loader() -> None:
    from torch.utils.data import DataLoader

    import fastreid.data.build as data_build
    import fastreid.data.data_utils as data_utils

    original = getattr(data_utils.DataLoaderX, "_fastreid_clip_original", data_utils.DataLoaderX)

    class DataLoaderX(DataLoader):
        """FastReID's prefetching loader on CUDA machines, a plain ``DataLoader`` elsewhere."""

        _fastreid_clip_original = original

        def __new__(cls, local_rank, **kwargs):
            if cuda_available():
                return original(local_rank, **kwargs)
            kwargs["pin_memory"] = False
            loader = DataLoader.__new__(DataLoader)
            loader.__init__(**kwargs)
            return loader

    data_utils.DataLoaderX = DataLoaderX
    data_build.DataLoaderX = DataLoaderX


def _patch_test_loader_workers() -> None:
    import fastreid.data as data_pkg
    import fastreid.data.build as data_build
    import fastreid.engine.defaults as engine_defaults
    from fastreid.config import CfgNode

    original = getattr(data_build.build_reid_test_loader, "_fastreid_clip_original", data_build.build_reid_test_loader)

    def build_reid_test_loader(*args, **kwargs):
        """FastReID's test loader with ``num_workers`` taken from ``cfg.DATALOADER.NUM_WORKERS``."""
        if args and isinstance(args[0], CfgNode):
            cfg = args[0]
            explicit = data_build._test_loader_from_config(cfg, *args[1:], **kwargs)
            return original(**explicit, num_workers=cfg.DATALOADER.NUM_WORKERS)
        return original(*args, **kwargs)

    build_reid_test_loader._fastreid_clip_original = original
    for module in (data_build, data_pkg, engine_defaults):
        module.build_reid_test_loader = build_reid_test_loader


def _patch_evaluator_compile() -> None:
    import fastreid.evaluation.reid_evaluation as reid_evaluation

    def _compile_dependencies(self):
        try:
            from fastreid.evaluation.rank_cylib.rank_cy import evaluate_cy  # noqa: F401
        except ImportError:
            warnings.warn(
                "FastReID's Cython ranker (fastreid/evaluation/rank_cylib/rank_cy) is not built; using the slower "
                "NumPy ranker. Build it once with `make setup` (or `python -m fastreid_clip.utils.build_ranker`).",
                RuntimeWarning,
            )

    reid_evaluation.ReidEvaluator._compile_dependencies = _compile_dependencies


def _patch_metric_printer() -> None:
    from fastreid.utils import events

    printer = events.CommonMetricPrinter
    if getattr(printer.write, "_fastreid_clip_patched", False):
        return
    original_write = printer.write

    def write(self):
        storage = events.get_event_storage()
        last = getattr(self, "_last_write", None)
        if last is not None and last[0] == storage.iter:
            self._last_write = None  # a second write at the same iteration: no ETA estimate, no division by 0
        return original_write(self)

    write._fastreid_clip_patched = True
    printer.write = write


def _patch_contiguous_optimizer_zero_grad() -> None:
    import fastreid.engine.defaults as engine_defaults
    import fastreid.solver as solver_pkg
    import fastreid.solver.build as solver_build
    from fastreid.utils.params import ContiguousParams

    original = getattr(solver_build.build_optimizer, "_fastreid_clip_original", solver_build.build_optimizer)

    def build_optimizer(cfg, model, contiguous=True):
        """FastReID's ``build_optimizer``; over ``ContiguousParams`` buffers ``zero_grad`` zeroes in place."""
        optimizer, param_wrapper = original(cfg, model, contiguous)
        if isinstance(param_wrapper, ContiguousParams):
            zero_grad = optimizer.zero_grad

            def zero_grad_in_place(set_to_none: bool = False):
                # The parameters' .grad are views of the buffer's .grad: dropping it would detach them.
                zero_grad(set_to_none=False)

            optimizer.zero_grad = zero_grad_in_place
        return optimizer, param_wrapper

    build_optimizer._fastreid_clip_original = original
    for module in (solver_build, solver_pkg, engine_defaults):
        module.build_optimizer = build_optimizer


def _distributed_worker(local_rank, main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args):
    """FastReID's worker, using NCCL on CUDA machines and gloo on CPU-only machines."""
    import torch
    import torch.distributed as dist
    from fastreid.utils import comm

    use_cuda = cuda_available()
    if use_cuda and num_gpus_per_machine > torch.cuda.device_count():
        raise RuntimeError(
            f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} CUDA devices are visible"
        )
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    backend = "nccl" if use_cuda else "gloo"
    try:
        dist.init_process_group(backend=backend, init_method=dist_url, world_size=world_size, rank=global_rank)
    except Exception:
        logging.getLogger(__name__).error("Process group URL: %s (backend %s)", dist_url, backend)
        raise
    if use_cuda:
        torch.cuda.set_device(local_rank)
    comm.synchronize()

    assert comm._LOCAL_PROCESS_GROUP is None
    num_machines = world_size // num_gpus_per_machine
    for i in range(num_machines):
        ranks_on_i = list(range(i * num_gpus_per_machine, (i + 1) * num_gpus_per_machine))
        group = dist.new_group(ranks_on_i)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    try:
        main_func(*args)
    finally:
        comm.synchronize()
        dist.destroy_process_group()


def _patch_launch() -> None:
    # ``import fastreid.engine.launch as m`` would give the *function* ``launch`` (fastreid.engine's star import
    # shadows the submodule attribute), so take the module object itself.
    launch_module = importlib.import_module("fastreid.engine.launch")
    assert isinstance(launch_module, types.ModuleType)
    launch_module._distributed_worker = _distributed_worker


def apply() -> None:
    """Apply every fix once. Safe to call many times; must run before ``fastreid`` is first imported."""
    global _APPLIED
    if _APPLIED:
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never let open_clip reach for the hub
    _install_import_shims()
    _patch_data_loader()
    _patch_test_loader_workers()
    _patch_evaluator_compile()
    _patch_metric_printer()
    _patch_contiguous_optimizer_zero_grad()
    _patch_launch()
    _APPLIED = True
