"""`tabvlm info`: parameter counts without allocating weights."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from tabvlm.commands.info import main
from tabvlm.model import TabVLM, load_model_config

CONFIGS = Path(__file__).parents[2] / "configs"


def test_info_json_for_the_seed_scale_config_allocates_no_weights():
    # In a fresh process, so that its peak memory is the command's: on the meta device the
    # 0.5B model's 2 GB of float32 weights are never allocated (torch itself takes ~0.4 GB).
    code = (
        "import resource, sys; from tabvlm.commands.info import main; "
        f"rc = main([{str(CONFIGS / 'nanotab-0.5b.yaml')!r}, '--json']); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak_mb = int(done.stderr.strip().splitlines()[-1]) / 1024  # ru_maxrss is in KiB on Linux
    assert peak_mb < 1200, f"peak RSS {peak_mb:.0f} MB: weights were allocated"
    out = json.loads(done.stdout)
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
