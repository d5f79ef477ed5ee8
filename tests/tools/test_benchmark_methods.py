"""tools/benchmark_methods.py: discovers the synthetic configs, trains each in a child process, prints the tables."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "benchmark_methods.py")


def _tool():
    spec = importlib.util.spec_from_file_location("benchmark_methods", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_synthetic_config_is_a_row_and_starts_from_the_shipped_weights():
    tool = _tool()
    runs = tool.discover_runs()
    configs = sorted(f for f in os.listdir(os.path.join(ROOT, "configs", "Synthetic")) if f.endswith(".yml"))
    assert sorted({os.path.basename(r.config) for r in runs}) == configs
    budgets = set()
    for run in runs:
        cfg = tool.load_config(run)
        bb = cfg.MODEL.BACKBONE
        if run.name.endswith("_random_init"):
            assert not bb.PRETRAIN
        else:
            assert bb.PRETRAIN and bb.PRETRAIN_PATH == f"weights/synthetic_clip/{bb.CLIP_NAME}-synthetic.safetensors"
            assert os.path.isfile(os.path.join(ROOT, bb.PRETRAIN_PATH))
        budgets.add(tool.image_stage_budget(cfg))
    assert budgets == {"24 x 32"}  # the same image-stage budget for every method
    assert runs[0].name == "clip_baseline_vit_tiny_random_init" and runs[1].name == "clip_baseline_vit_tiny"


def test_image_budget_scales_the_schedule_the_image_stage_actually_uses():
    from fastreid_clip.config import get_cfg, merge_config_file
    from fastreid_clip.config.stages import stage_specs

    tool = _tool()

    def shortened(name):
        cfg = merge_config_file(get_cfg(), os.path.join(ROOT, "configs", "Synthetic", name))
        cfg.merge_from_list(tool.image_epochs_overrides(cfg, 12))
        return {s.name: s for s in stage_specs(cfg)}

    own = shortened("clip_reid_vit_tiny.yml")["image"]  # its own schedule: milestones 16, 21 of 24 -> 8, 10 of 12
    assert (own.epochs, own.steps, own.warmup_epochs) == (12, (8, 10), 2)
    fgdi = shortened("clip_fgdi_vit_tiny.yml")  # image continues prior's scheduler, 3 epochs ahead
    assert fgdi["image"].epochs == 12 and fgdi["image"].share_optimizer_with == "prior"
    assert fgdi["prior"].epochs == 3 and fgdi["prior"].steps == (3 + 8, 3 + 10)  # the same image epochs 8, 10
    assert fgdi["prior"].warmup_epochs == 3  # the warm-up inside prior is not part of the image budget


def test_rows_with_different_image_budgets_are_refused():
    tool = _tool()
    rows = [{"spec": {"name": "a"}, "budget": "24 x 32"}, {"spec": {"name": "b"}, "budget": "12 x 32"}]
    with pytest.raises(SystemExit, match=r"differ in image-stage budget.*'b': '12 x 32'"):
        tool.check_same_budget("in_domain", rows)
    tool.check_same_budget("in_domain", rows[:1])


def test_quick_run_trains_both_tables_and_reuses_unchanged_results(datasets_root, tmp_path):
    cmd = [sys.executable, TOOL, "--quick", "--only", "clip_reid_vit_tiny", "--output-dir", str(tmp_path)]
    env = {**os.environ, "FASTREID_DATASETS": datasets_root}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    tables = run.stdout.split("**")[1:]
    assert tables[0].startswith("In-domain") and tables[2].startswith("Domain generalisation")
    for body in (tables[1], tables[3]):
        rows = [line for line in body.splitlines() if line.startswith("| ClipReID")]
        assert len(rows) == 1, body
        cells = [c.strip() for c in rows[0].strip("|").split("|")]
        assert cells[0] == "ClipReID (ViT-Tiny-16, ViT-Tiny-16-synthetic.safetensors)"
        map_, rank1, minp, train_s, img_s = (float(c) for c in cells[2:])
        assert 0 < minp <= map_ <= 100 and 0 < rank1 <= 100 and train_s > 0 and img_s > 0
    result = json.load(open(tmp_path / "quick" / "dg" / "clip_reid_vit_tiny" / "result.json"))
    assert "DATASETS.SYNTHETIC.TEST_DOMAINS" in result["spec"]["overrides"] and result["budget"] == "1 x 32"
    assert (tmp_path / "quick.md").read_text().strip() == run.stdout.split("\n\n", 1)[1].strip()

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(re.findall(r"clip_reid_vit_tiny: reusing", again.stdout)) == 2  # nothing retrained
