"""The tiny model with decoder variants, and random token ids: shared by the model tests."""

from pathlib import Path

import torch

from tabvlm.config import from_dict, to_dict
from tabvlm.model import ModelConfig, TabVLM, load_model_config

TINY = Path(__file__).parents[1] / "configs" / "tiny.yaml"


def tiny(**lm) -> TabVLM:
    """The tiny config with LM overrides, fp32, seeded, eval mode."""
    data = to_dict(load_model_config(TINY))
    data["lm"].update(lm)
    torch.manual_seed(0)
    return TabVLM(from_dict(ModelConfig, data)).eval()


def text_ids(gen: torch.Generator, batch: int, length: int) -> torch.Tensor:
    return torch.randint(10, 12000, (batch, length), generator=gen)


VARIANTS = [
    {},  # tiny: GQA 4/2, tied embeddings
    {"qk_norm": True, "tie_embeddings": False, "num_kv_heads": 1, "head_dim": 48},
]
