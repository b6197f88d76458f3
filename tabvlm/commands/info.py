"""Parameter counts and image tokens per image of a model config or a saved model.

Run as: tabvlm info CONFIG_OR_MODEL_DIR [--json] [key=value ...]
The model is built on the meta device: no weights are allocated, so even the 0.5B config is
instant. Tied embeddings are counted once.
"""

from __future__ import annotations

import argparse
import json

import torch

from tabvlm.model.config import load_model_config
from tabvlm.model.vlm import TabVLM


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tabvlm info", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="a model YAML config, a config.json, or a saved model folder")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. lm.num_layers=4")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    cfg = load_model_config(args.path, args.overrides)
    with torch.device("meta"):
        model = TabVLM(cfg)  # on the meta device: counts only
    params = model.num_parameters()
    if args.json:
        print(json.dumps({"params": params, "image_tokens": cfg.image_tokens}))
        return 0
    print(f"{args.path}")
    for name in ("vision", "projector", "lm", "total"):
        print(f"  {name:<10} {params[name]:>14,} params ({params[name] / 1e6:.1f}M)")
    print(f"  bf16 weights  {params['total'] * 2 / 1e6:.1f} MB")
    print(f"  image tokens  {cfg.image_tokens} per image")
    return 0
