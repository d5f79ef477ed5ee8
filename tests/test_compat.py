"""fastreid 1.4.0 works on torch 2 / Python 3.11 / CPU after ``import fastreid_clip`` (no fastreid file edited)."""

import importlib
import pkgutil
import sys

import fastreid_clip  # noqa: F401
import pytest
import torch

# Every fastreid module fastreid-clip (and FastReID's own train_net) uses.
USED_MODULES = [
    "fastreid.config", "fastreid.data", "fastreid.data.build", "fastreid.data.common", "fastreid.data.data_utils",
    "fastreid.data.datasets", "fastreid.data.samplers", "fastreid.data.transforms", "fastreid.engine",
    "fastreid.engine.defaults", "fastreid.engine.hooks", "fastreid.engine.launch", "fastreid.engine.train_loop",
    "fastreid.evaluation", "fastreid.evaluation.evaluator", "fastreid.evaluation.rank",
    "fastreid.evaluation.reid_evaluation", "fastreid.evaluation.rerank", "fastreid.evaluation.testing",
    "fastreid.evaluation.query_expansion", "fastreid.modeling", "fastreid.modeling.backbones",
    "fastreid.modeling.meta_arch", "fastreid.solver", "fastreid.utils.checkpoint", "fastreid.utils.comm",
    "fastreid.utils.events", "fastreid.utils.env", "fastreid.utils.file_io", "fastreid.utils.logger",
    "fastreid.utils.compute_dist", "fastreid.utils.registry",
]


@pytest.mark.parametrize("name", USED_MODULES)
def test_used_fastreid_module_imports(name):
    importlib.import_module(name)


def test_all_fastreid_submodules_import_except_build_scripts():
    import fastreid

    failures = []
    for info in pkgutil.walk_packages(fastreid.__path__, "fastreid."):
        if info.name.endswith(("rank_cylib.setup", "rank_cylib.test_cython")):
            continue  # a setuptools script and a benchmark script, not library modules
        if info.name == "fastreid.utils.visualizer":
            continue  # FastReID's optional plotting helper needs matplotlib, which we do not depend on
        try:
            importlib.import_module(info.name)
        except Exception as err:  # pragma: no cover - reported below
            failures.append(f"{info.name}: {err!r}")
    assert failures == []


def test_six_and_mapping_shims():
    import collections

    from torch._six import string_classes

    assert "torch._six" in sys.modules and isinstance("x", string_classes)
    assert collections.Mapping is collections.abc.Mapping


def test_data_loader_without_cuda_stream():
    from fastreid.data.build import build_reid_train_loader

    if torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    data = [{"images": torch.full((3, 4, 4), float(i)), "targets": i} for i in range(8)]

    class Listed(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return data[i]

    loader = build_reid_train_loader(Listed(), sampler=torch.utils.data.SequentialSampler(range(8)),
                                     total_batch_size=4, num_workers=0)
    batch = next(iter(loader))
    assert batch["images"].shape == (4, 3, 4, 4) and batch["targets"].tolist() == [0, 1, 2, 3]


def test_test_loader_reads_num_workers():
    from fastreid.config import get_cfg
    from fastreid.data.build import build_reid_test_loader

    cfg = get_cfg()
    cfg.DATALOADER.NUM_WORKERS = 1  # FastReID hard-codes 4 test workers
    loader, num_query = build_reid_test_loader(cfg, test_set=list(range(10)), num_query=3)
    assert num_query == 3 and loader.num_workers == 1


def test_evaluator_never_exits_when_ranker_is_missing(monkeypatch):
    from fastreid.evaluation.reid_evaluation import ReidEvaluator

    monkeypatch.setitem(sys.modules, "fastreid.evaluation.rank_cylib.rank_cy", None)  # import fails
    with pytest.warns(RuntimeWarning, match="Cython ranker"):
        ReidEvaluator._compile_dependencies(object())


def test_metric_printer_survives_two_writes_at_one_iteration():
    from fastreid.utils.events import CommonMetricPrinter, EventStorage

    printer = CommonMetricPrinter(max_iter=10)
    with EventStorage(0) as storage:
        storage.put_scalar("total_loss", 1.0)
        storage.iter, storage.epoch = 1, 0
        printer.write()
        printer.write()  # FastReID divides by (iteration - last_write_iteration) = 0 here


def test_launch_uses_our_worker():
    launch_module = sys.modules["fastreid.engine.launch"]  # the module, not the function fastreid.engine.launch
    assert launch_module._distributed_worker is fastreid_clip.compat._distributed_worker
