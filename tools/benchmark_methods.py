#!/usr/bin/env python
"""Train every method that has a synthetic config from the shipped synthetic CLIP and print one table.

Rows: every ``configs/Synthetic/*.yml`` (each starts from ``weights/synthetic_clip/``), plus the CLIP baseline from
random initialisation (the acceptance reference: pretraining must help) and the ablation rows of ``ABLATIONS``
(CLIP-SCGI without CGI / without CFF / fusing every image token; CLIP-FGDI's apn variants), each in the tables it
names and trained with ``SEED 0``. Every row
spends the same image-stage budget: ``--image-epochs`` (default 12, half the configs' 24; lr milestones and
warm-up scaled) at the configs' batch of 32; the tool refuses a table whose rows differ in epochs x batch. A
meta-architecture with several inference modes (a class attribute ``INFERENCE_MODE_OVERRIDES = {mode: [config
overrides]}``) gets one row per mode, all from the same trained weights.

Two tables:

* **in-domain**: the synthetic data of the configs (3 domains, training and test identities in all of them);
* **domain generalisation**: 4 domains, training identities filmed in domains 0-2, test identities only in the
  held-out domain 3 (``DATASETS.SYNTHETIC.TRAIN_DOMAINS/TEST_DOMAINS``; same identity counts as in-domain); the
  slow RN-Tiny baseline is left out of it (``TABLE_EXCLUDES``) to keep the whole run within 30 minutes.

Columns: mAP, Rank-1, mINP (%); ``train s`` = wall time of ``ClipTrainer.train()`` (every stage, the prompt stage's
feature cache included; data generation and evaluation excluded); ``test img/s`` = query + gallery images / wall
time of the evaluation (loading, feature extraction, ranking).

Each run is a child process (``--worker``) writing ``<output-dir>/<table>/<row>/result.json``; a rerun reuses the
results of unchanged runs (same overrides, config files and weight file) unless ``--fresh`` (use it after code
changes). Examples::

    python tools/benchmark_methods.py                       # both tables (every method: an hour or more on 2 CPU cores)
    python tools/benchmark_methods.py --tables in_domain --only clip_reid_vit_tiny
    python tools/benchmark_methods.py --quick                # a 1-epoch smoke run of every row (tests)
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SYNTHETIC_CONFIGS = os.path.join(ROOT, "configs", "Synthetic")
# The random-init reference row: the baseline ViT config without its weight file (same lr and schedule).
RANDOM_INIT = {"clip_baseline_vit_tiny": ["MODEL.BACKBONE.PRETRAIN", "False"]}
# Ablation rows, right after the config they are made from: run name -> (config stem, label, overrides, tables).
# CLIP-SCGI's Tab. III rows: no CGI (fixed prompt into CFF, no captions, no L_con) and no CFF (baseline heads +
# L_con), the fusion with the query in its residual stream (the query is the composed prompt in training, the fixed
# prompt at test time), and over every image token (notes §6.4: "ablate `all` first").
# CLIP-FGDI's Tab. VIII apn variants: the Euclidean hinge (the paper's best, at its beta 0.3) and the cosine form
# with the sign that matches the stated intent (docs/clip_fgdi.md, "The direction problem").
ABLATIONS = {
    "clip_scgi_vit_tiny_no_cgi": ("clip_scgi_vit_tiny", "no CGI", [
        "MODEL.SCGI.CGI.ENABLED", "False", "SOLVER.LR_FACTORS", "[['mim', 10.0], ['head', 10.0]]"], ("in_domain",)),
    "clip_scgi_vit_tiny_no_cff": ("clip_scgi_vit_tiny", "no CFF", [
        "MODEL.SCGI.CFF.ENABLED", "False", "MODEL.LOSSES.TRI.FEATURES", "('inter', 'final', 'proj')",
        "SOLVER.LR_FACTORS", "[['inversion', 10.0], ['head', 10.0], ['head_proj', 10.0]]"], ("in_domain",)),
    "clip_scgi_vit_tiny_kv_all": ("clip_scgi_vit_tiny", "CFF.KV all", ["MODEL.SCGI.CFF.KV", "all"], ("in_domain",)),
    "clip_scgi_vit_tiny_query_residual": ("clip_scgi_vit_tiny", "CFF query residual", [
        "MODEL.SCGI.CFF.QUERY_RESIDUAL", "True"], ("in_domain",)),
    "clip_fgdi_vit_tiny_ed_hinge": ("clip_fgdi_vit_tiny", "apn ed_hinge, beta 0.3", [
        "MODEL.FGDI.APN.MODE", "ed_hinge", "MODEL.FGDI.BETA", "0.3"], ("dg",)),
    "clip_fgdi_vit_tiny_intent_cs": ("clip_fgdi_vit_tiny", "apn intent_cs", [
        "MODEL.FGDI.APN.MODE", "intent_cs"], ("dg",)),
    # CLIP-ReID's per-epoch reshuffled prompt minibatches instead of the reference's fixed order.
    "clip_fgdi_vit_tiny_shuffled": ("clip_fgdi_vit_tiny", "id_prompt minibatches shuffled", [
        "STAGES.ID_PROMPT.BATCH_ORDER", "shuffle"], ("dg",)),
    # CLIP-ReID's test feature (L2-normalised, cosine) instead of the reference's unnormalised Euclidean one.
    "clip_fgdi_vit_tiny_cosine_test": ("clip_fgdi_vit_tiny", "normalised test feature, cosine", [
        "MODEL.HEADS.TEST_FEAT_NORM", "True", "TEST.METRIC", "cosine"], ("dg",)),
    # CLIP-FGDI's schedule, losses and test feature without its domain parts (no GRL term, no apn): separates what
    # the method adds from how its settings differ from CLIP-ReID's (prior stage, ID weight, soft margin, metric).
    "clip_fgdi_vit_tiny_no_domain": ("clip_fgdi_vit_tiny", "alpha 0, beta 0 (no GRL loss, no apn)", [
        "MODEL.FGDI.DOMAIN_LOSS_SCALE", "0.0", "MODEL.FGDI.BETA", "0.0"], ("dg",)),
}
DG_OVERRIDES = ["DATASETS.SYNTHETIC.NUM_DOMAINS", "4", "DATASETS.SYNTHETIC.TRAIN_DOMAINS", "(0, 1, 2)",
                "DATASETS.SYNTHETIC.TEST_DOMAINS", "(3,)"]
TABLES = {"in_domain": [], "dg": DG_OVERRIDES}
# Rows left out of a table to keep the whole benchmark within 30 minutes on 2 cores (the slow RN-Tiny baseline
# is in the in-domain table only).
# CLIP-FGDI needs several training domains (its config trains on synthetic domains 0-2 as three sources and tests
# on the held-out domain 3): it is a row of the domain-generalisation table only.
TABLE_EXCLUDES = {"dg": ("clip_baseline_rn_tiny",), "in_domain": ("clip_fgdi_vit_tiny",)}
for _name, (_, _, _, _tables) in ABLATIONS.items():  # an ablation row is in the tables it names only
    for _table in TABLES:
        if _table not in _tables:
            TABLE_EXCLUDES[_table] += (_name,)
# The benchmark's image-stage budget: half the configs' 24 epochs (milestones and warm-up scaled), the same for
# every row; --image-epochs 0 trains with the configs' own schedules.
DEFAULT_IMAGE_EPOCHS = 12
TABLE_TITLES = {"in_domain": "In-domain (3 domains, train and test identities in all)",
                "dg": "Domain generalisation (train: domains 0-2, test: held-out domain 3)"}
# Smoke-test budget: small data, one epoch per stage.
QUICK_OVERRIDES = ["DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "16", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "8",
                   "DATASETS.SYNTHETIC.IMAGES_PER_ID_CAMERA", "2", "TEST.IMS_PER_BATCH", "64"]
RUN_OVERRIDES = ["SEED", "0", "TEST.EVAL_INIT", "False", "TEST.RANK_VIS.ENABLED", "False"]


@dataclass
class Run:
    """One training run: a config, its overrides, and where it writes."""

    name: str
    config: str
    overrides: List[str] = field(default_factory=list)

    def spec(self, output_dir: str) -> Dict:
        return {"name": self.name, "config": self.config, "overrides": self.overrides, "output_dir": output_dir}


def config_version(config: str) -> str:
    """Digest of a config file, its ``_BASE_`` chain and the weight file it names: a run's result is reused only
    while these are unchanged (code changes need ``--fresh``)."""
    import yaml

    digest, path, seen = hashlib.sha1(), os.path.join(ROOT, config), set()
    while path and path not in seen:
        seen.add(path)
        with open(path, "rb") as f:
            text = f.read()
        digest.update(text)
        base = (yaml.safe_load(text) or {}).get("_BASE_")
        path = os.path.normpath(os.path.join(os.path.dirname(path), base)) if base else None
    weights = load_config(Run("", config)).MODEL.BACKBONE.PRETRAIN_PATH
    if weights and os.path.isfile(os.path.join(ROOT, weights)):
        with open(os.path.join(ROOT, weights), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:12]


def discover_runs(only: Sequence[str] = ()) -> List[Run]:
    """Every synthetic config, ViT ones first, each in file-name order; the random-init reference row right before
    the config it is made from."""
    runs = []
    paths = sorted(glob.glob(os.path.join(SYNTHETIC_CONFIGS, "*.yml")))
    is_resnet = {path: load_config(Run("", path)).MODEL.BACKBONE.CLIP_NAME.startswith("RN") for path in paths}
    for path in sorted(paths, key=lambda p: (is_resnet[p], p)):
        stem = os.path.splitext(os.path.basename(path))[0]
        rel = os.path.relpath(path, ROOT)
        if stem in RANDOM_INIT:
            runs.append(Run(f"{stem}_random_init", rel, list(RANDOM_INIT[stem])))
        runs.append(Run(stem, rel))
        runs += [Run(name, rel, list(overrides)) for name, (base, _, overrides, _) in ABLATIONS.items()
                 if base == stem]
    if only:
        unknown = set(only) - {r.name for r in runs}
        if unknown:
            raise SystemExit(f"--only: unknown run names {sorted(unknown)}; known: {[r.name for r in runs]}")
        runs = [r for r in runs if r.name in only]
    return runs


def load_config(run: Run, extra: Sequence[str] = ()):
    from fastreid_clip.config import get_cfg, merge_config_file

    cfg = get_cfg()
    merge_config_file(cfg, os.path.join(ROOT, run.config), list(run.overrides) + list(extra))
    return cfg


def image_stage(cfg):
    """The stage that trains the image encoder (the last ``images`` stage; the single SOLVER stage of a baseline)."""
    from fastreid_clip.config.stages import stage_specs

    return [s for s in stage_specs(cfg) if s.data == "images"][-1]


def image_stage_budget(cfg) -> str:
    """``epochs x batch`` of :func:`image_stage`."""
    stage = image_stage(cfg)
    return f"{stage.epochs} x {stage.ims_per_batch}"


def _set(stage, **values) -> List[str]:
    """``KEY VALUE`` overrides of ``stage``'s fields, under the keys it was read from (``StageSpec.config_key``:
    ``SOLVER.MAX_EPOCH`` / ``TEST.EVAL_PERIOD`` for a single-stage config, ``STAGES.<NAME>.*`` otherwise)."""
    return [item for attr, value in values.items() for item in (stage.config_key(attr), str(value))]


def image_epochs_overrides(cfg, epochs: int) -> List[str]:
    """The image stage shortened (or lengthened) to ``epochs``: lr milestones and warm-up scaled with it, so the
    schedule keeps its shape; the other stages (prompt learning on cached features) are left as they are."""
    from fastreid_clip.config.stages import shared_stage, stage_specs

    stage = image_stage(cfg)
    scale = epochs / stage.epochs
    specs = stage_specs(cfg)
    owner = shared_stage(specs, specs.index(stage))
    if owner is not None:
        # The image stage continues an earlier stage's scheduler (STAGES.<NAME>.SHARE_OPTIMIZER_WITH, CLIP-FGDI's
        # prior): its milestones and warm-up are that stage's keys, in scheduler epochs counted from the earlier
        # stage's start. Only the part after the earlier stage's epochs is scaled.
        offset = owner.epochs

        def rescale(e):
            return e if e <= offset else offset + max(int(round((e - offset) * scale)), 1)

        steps = sorted({min(rescale(e), offset + epochs) for e in owner.steps})
        return (_set(stage, epochs=epochs, checkpoint_period=epochs)
                + _set(owner, steps=steps, warmup_epochs=rescale(owner.warmup_epochs)))
    steps = sorted({min(max(int(round(e * scale)), 1), epochs) for e in stage.steps})
    warmup = max(int(round(stage.warmup_epochs * scale)), 1) if stage.warmup_epochs else 0
    return _set(stage, epochs=epochs, steps=steps, warmup_epochs=warmup, checkpoint_period=epochs)


def quick_overrides(cfg) -> List[str]:
    """One epoch per stage, no lr milestones or warm-up: a smoke run of the whole pipeline."""
    from fastreid_clip.config.stages import stage_specs

    out = list(QUICK_OVERRIDES)
    for stage in stage_specs(cfg):
        out += _set(stage, epochs=1, steps="()", warmup_epochs=0, eval_period=0, checkpoint_period=1)
    return out


def no_eval_during_training(cfg) -> List[str]:
    """Every stage's evaluation period 0: the worker evaluates once after training, timed separately."""
    from fastreid_clip.config.stages import stage_specs

    return [item for stage in stage_specs(cfg) for item in _set(stage, eval_period=0)]


def describe_run(cfg, run: Run) -> str:
    bb = cfg.MODEL.BACKBONE
    init = "random init" if not bb.PRETRAIN else os.path.basename(bb.PRETRAIN_PATH)
    ablation = f", {ABLATIONS[run.name][1]}" if run.name in ABLATIONS else ""
    return f"{cfg.MODEL.META_ARCHITECTURE}{ablation} ({bb.CLIP_NAME}, {init})"


# ---------------------------------------------------------------------------------------------------- worker
def worker(spec_path: str) -> None:
    """Train one run and evaluate it in every inference mode; write ``result.json`` next to ``spec_path``."""
    import torch

    import fastreid_clip  # noqa: F401
    from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
    from fastreid.utils.logger import setup_logger

    from fastreid_clip.checkpoint import load_model_weights
    from fastreid_clip.engine import ClipTrainer

    with open(spec_path) as f:
        spec = json.load(f)
    run = Run(spec["name"], spec["config"], spec["overrides"])
    cfg = load_config(run)
    extra = RUN_OVERRIDES + no_eval_during_training(cfg) + ["OUTPUT_DIR", spec["output_dir"]]
    cfg = load_config(run, extra)
    setup_logger(spec["output_dir"], distributed_rank=0, name="fastreid")
    setup_logger(spec["output_dir"], distributed_rank=0, name="fastreid_clip")

    trainer = ClipTrainer(cfg)
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    cfg = trainer.cfg  # NUM_CLASSES / NUM_CAMERAS filled from the training set
    trained = trainer.raw_model.state_dict()

    meta_arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    modes: Dict[str, List[str]] = dict(getattr(meta_arch, "INFERENCE_MODE_OVERRIDES", None) or {"": []})
    test_images = sum(len(ClipTrainer.build_test_loader(cfg, name)[0].dataset) for name in cfg.DATASETS.TESTS)
    rows = []
    for mode, overrides in modes.items():
        eval_cfg = cfg.clone()
        eval_cfg.defrost()
        eval_cfg.merge_from_list(list(overrides) + ["MODEL.BACKBONE.PRETRAIN", "False"])
        eval_cfg.freeze()
        model = ClipTrainer.build_model(eval_cfg)
        load_model_weights(model, "trained weights of this run", state=trained)
        model.eval()
        start = time.perf_counter()
        with torch.no_grad():
            results = ClipTrainer.test(eval_cfg, model)
        eval_seconds = time.perf_counter() - start
        if len(eval_cfg.DATASETS.TESTS) > 1 or "mAP" not in results:
            results = next(iter(results.values()))
        rows.append({"mode": mode, "mAP": results["mAP"], "Rank-1": results["Rank-1"], "mINP": results["mINP"],
                     "test_images": test_images, "eval_seconds": eval_seconds})
    result = {"spec": spec, "label": describe_run(cfg, run), "budget": image_stage_budget(cfg),
              "train_seconds": train_seconds, "rows": rows, "threads": torch.get_num_threads()}
    with open(os.path.join(os.path.dirname(spec_path), "result.json"), "w") as f:
        json.dump(result, f, indent=1)


# ---------------------------------------------------------------------------------------------------- driver
def machine_description() -> str:
    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def run_table(table: str, runs: List[Run], output_dir: str, quick: bool, fresh: bool,
              image_epochs: int = 0) -> List[Dict]:
    results = []
    for run in runs:
        if table in TABLE_EXCLUDES and run.name in TABLE_EXCLUDES[table]:
            continue
        overrides = list(run.overrides) + TABLES[table]
        cfg = load_config(Run(run.name, run.config, overrides))
        if quick:
            overrides += quick_overrides(cfg)
        elif image_epochs:
            overrides += image_epochs_overrides(cfg, image_epochs)
        run_dir = os.path.join(output_dir, table, run.name)
        spec = Run(run.name, run.config, overrides).spec(os.path.join(run_dir, "train"))
        spec["config_version"] = config_version(run.config)
        result_path = os.path.join(run_dir, "result.json")
        if not fresh and os.path.isfile(result_path):
            with open(result_path) as f:
                previous = json.load(f)
            if previous.get("spec") == spec:
                print(f"[{table}] {run.name}: reusing {result_path}", flush=True)
                results.append(previous)
                continue
        os.makedirs(run_dir, exist_ok=True)
        spec_path = os.path.join(run_dir, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f, indent=1)
        if os.path.exists(result_path):
            os.remove(result_path)
        print(f"[{table}] {run.name}: training ({run.config} {' '.join(overrides)}); log in "
              f"{os.path.join(run_dir, 'train', 'log.txt')}", flush=True)
        start = time.perf_counter()
        with open(os.path.join(run_dir, "worker.log"), "w") as log:
            code = subprocess.call([sys.executable, os.path.abspath(__file__), "--worker", spec_path],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        if code != 0 or not os.path.isfile(result_path):
            raise SystemExit(f"[{table}] {run.name} failed (exit {code}); see {os.path.join(run_dir, 'worker.log')}")
        with open(result_path) as f:
            result = json.load(f)
        first = result["rows"][0]
        print(f"[{table}] {run.name}: mAP {first['mAP']:.1f}, R1 {first['Rank-1']:.1f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        results.append(result)
    check_same_budget(table, results)
    return results


def check_same_budget(table: str, results: List[Dict]) -> None:
    """Every row of a table must have trained its image encoder for the same epochs x batch."""
    budgets = {r["budget"] for r in results}
    if len(budgets) > 1:
        raise SystemExit(f"[{table}] rows differ in image-stage budget (epochs x batch): "
                         f"{ {r['spec']['name']: r['budget'] for r in results} }; give every synthetic config the "
                         f"same image-stage schedule")


def markdown_table(results: List[Dict]) -> str:
    lines = ["| method | run | mAP | Rank-1 | mINP | train s | test img/s |", "|---|---|---|---|---|---|---|"]
    for result in results:
        for row in result["rows"]:
            label = result["label"] + (f", {row['mode']} inference" if row["mode"] else "")
            lines.append(f"| {label} | `{result['spec']['name']}` | {row['mAP']:.1f} | {row['Rank-1']:.1f} | "
                         f"{row['mINP']:.1f} | {result['train_seconds']:.0f} | "
                         f"{row['test_images'] / row['eval_seconds']:.0f} |")
    return "\n".join(lines)


def report(tables: Dict[str, List[Dict]], quick: bool, wall_seconds: float) -> str:
    epochs, batch = next(iter(tables.values()))[0]["budget"].split(" x ") if tables else ("?", "?")
    out = [f"Method benchmark ({time.strftime('%Y-%m-%d')}, {machine_description()}; SEED 0; image stage "
           f"{epochs} epochs at batch {batch} for every row{', --quick smoke run' if quick else ''}; whole benchmark "
           f"{wall_seconds / 60:.1f} min)", ""]
    for table, results in tables.items():
        out += [f"**{TABLE_TITLES[table]}**", "", markdown_table(results), ""]
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default=os.path.join(ROOT, "output", "benchmark_methods"))
    parser.add_argument("--tables", default="in_domain,dg", help="comma-separated: in_domain, dg")
    parser.add_argument("--only", default="", help="comma-separated run names (default: every run)")
    parser.add_argument("--quick", action="store_true", help="1 epoch per stage on a small data set (smoke test)")
    parser.add_argument("--fresh", action="store_true",
                        help="retrain every run (default: reuse results of unchanged configs; code is not compared)")
    parser.add_argument("--image-epochs", type=int, default=DEFAULT_IMAGE_EPOCHS,
                        help=f"image-stage epochs of every row, milestones and warm-up scaled (default "
                             f"{DEFAULT_IMAGE_EPOCHS}; 0 = each config's own schedule)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    import fastreid_clip  # noqa: F401

    tables = [t for t in args.tables.split(",") if t]
    unknown = set(tables) - set(TABLES)
    if unknown:
        raise SystemExit(f"--tables: unknown {sorted(unknown)}; use {sorted(TABLES)}")
    runs = discover_runs([n for n in args.only.split(",") if n])
    start = time.perf_counter()
    done = {t: run_table(t, runs, os.path.join(args.output_dir, "quick" if args.quick else "full"), args.quick,
                         args.fresh, args.image_epochs) for t in tables}
    text = report(done, args.quick, time.perf_counter() - start)
    with open(os.path.join(args.output_dir, "quick.md" if args.quick else "benchmark.md"), "w") as f:
        f.write(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
