"""The model: SigLIP-layout ViT -> pixel-shuffle connector -> Llama/Qwen3-family LM."""

from tabvlm.model.config import LMConfig, ModelConfig, ProjectorConfig, VisionConfig, load_model_config
from tabvlm.model.lm import KVCache
from tabvlm.model.vlm import ImageTokenMismatchError, TabVLM, VLMOutput

__all__ = [
    "ImageTokenMismatchError",
    "KVCache",
    "LMConfig",
    "ModelConfig",
    "ProjectorConfig",
    "TabVLM",
    "VLMOutput",
    "VisionConfig",
    "load_model_config",
]
