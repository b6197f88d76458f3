"""Train one stage (lm-pretrain, lm-sft, vlm-pretrain, vlm-sft) from a YAML recipe.

Run as: tabvlm train CONFIG.yaml [key=value ...] [--resume] [--no-progress]
        torchrun --nproc_per_node N -m tabvlm.cli train CONFIG.yaml [key=value ...]

Overrides are dotted keys of `tabvlm.train.TrainConfig` (e.g. `max_steps=200 data.synth.rows=[2,4]
eval.every=100`); an unknown key is an error that names it. `--resume` continues from the last
checkpoint under `out_dir/checkpoints` exactly (same data, same RNG). The run ends by printing the
held-out ED / TEDS (vlm-sft) and the folder of the final model.
"""

from __future__ import annotations

import argparse

import torch.distributed as dist

from tabvlm.config import load, load_yaml
from tabvlm.train import TrainConfig, Trainer


def main(argv: list[str]) -> int:
    """Parse, train, print the result; 0 on success."""
    ap = argparse.ArgumentParser(prog="tabvlm train", description=__doc__.split("\n")[0])
    ap.add_argument("config", help="a training recipe (configs/*.yaml)")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. lr=1e-3")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint in out_dir")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    args = ap.parse_intermixed_args(argv)  # options may come after the overrides
    if load_yaml(args.config).get("stage") == "layout":
        return _train_layout(args.config, list(args.overrides), args.resume)
    overrides = list(args.overrides) + (["progress=false"] if args.no_progress else [])
    cfg = load(TrainConfig, args.config, overrides)
    try:
        trainer = Trainer(cfg, resume=args.resume)
        result = trainer.fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if not trainer.is_main:
        return 0
    print(f"step {result.step}: loss {result.loss:.4f}")
    if "final_ed" in result.metrics:
        m = result.metrics
        print(
            f"held-out ({cfg.eval.final_samples} tables): ED {m['final_ed']:.4f}  TEDS {m['final_teds']:.4f}  "
            f"TEDS-struct {m['final_teds_struct']:.4f}"
        )
    if "final_read" in result.metrics:
        print(
            f"held-out ({cfg.eval.final_samples} tables): image tokens read {result.metrics['final_read']:.4f}"
        )
    print(f"model: {result.final_dir}")
    return 0


def _train_layout(config: str, overrides: list[str], resume: bool) -> int:
    """`stage: layout` recipes: the layout model's trainer (tabvlm.train.layout)."""
    import logging

    from tabvlm.train.layout import LayoutTrainConfig, LayoutTrainer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cfg = load(LayoutTrainConfig, config, overrides)
    result = LayoutTrainer(cfg, resume=resume).fit()
    print(
        f"step {result['step']}: held-out TEDS {result.get('teds', float('nan')):.4f}  "
        f"TEDS-struct {result.get('teds_struct', float('nan')):.4f}"
    )
    print(f"model: {cfg.out_dir}/final")
    return 0
