"""`tabvlm info`: parameter counts without allocating weights."""

import json
import time
from pathlib import Path

import torch

from tabvlm.commands.info import main
from tabvlm.model import TabVLM, load_model_config

CONFIGS = Path(__file__).parents[2] / "configs"


def test_info_json_for_the_seed_scale_config_is_quick(capsys):
    start = time.perf_counter()
    assert main([str(CONFIGS / "nanotab-0.5b.yaml"), "--json"]) == 0
    assert time.perf_counter() - start < 20  # meta device: no 2 GB of fp32 weights
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"params", "image_tokens"}
    p = out["params"]
    assert set(p) == {"vision", "projector", "lm", "total"}
    assert p["vision"] + p["projector"] + p["lm"] == p["total"]
    assert 0.45e9 < p["total"] < 0.55e9
    assert out["image_tokens"] == 256


def test_info_counts_match_a_real_model_and_tied_weights_once(capsys, tmp_path):
    cfg = load_model_config(CONFIGS / "tiny.yaml")
    torch.manual_seed(0)
    model = TabVLM(cfg)
    model.save_pretrained(tmp_path)
    assert main([str(tmp_path), "--json"]) == 0  # a model folder works as well as a YAML
    p = json.loads(capsys.readouterr().out)["params"]
    assert p["total"] == sum(t.numel() for t in model.parameters()) < 3_000_000
    untied = sum(t.numel() for t in model.parameters()) + model.lm_head.weight.numel()
    assert main([str(CONFIGS / "tiny.yaml"), "lm.tie_embeddings=false", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"]["total"] == untied


def test_base_config_fits_the_size_budget(capsys):
    assert main([str(CONFIGS / "base.yaml")]) == 0
    out = capsys.readouterr().out
    assert "image tokens  256 per image" in out
    cfg = load_model_config(CONFIGS / "base.yaml")
    with torch.device("meta"):
        total = TabVLM(cfg).num_parameters()["total"]
    assert total * 2 <= 50e6  # bf16 weights <= 50 MB
