"""Export a TabVLM to a transformers folder that loads with the Auto classes, no remote code.

The architecture is `Cohere2VisionForConditionalGeneration` (transformers >= 4.56, vLLM): a
SigLIP vision tower, pixel shuffle, a 2-layer SwiGLU MLP (`linear_1` -> value/gate halves ->
`linear_2`) and any Auto language model (here Llama, or Qwen3 when the LM has QK-norm). That is
tabvlm's native layout, so the export is a rename with exact numerical parity:

| tabvlm                 | transformers                                |
|------------------------|---------------------------------------------|
| `vision_model.*`       | `model.vision_tower.vision_model.*`         |
| `connector.linear_1/2` | `model.multi_modal_projector.linear_1/2`    |
| `language_model.*`     | `model.language_model.*`                    |
| `lm_head.weight`       | `lm_head.weight`                            |

Prompt: the processor expands each `<|image_pad|>` in the text to `boi_token` + (tokens per tile
x `image_token`) + `img_line_break_token` + `eoi_token`; with boi `<|vision_start|>`, line break
`<|vision_end|>` and an empty eoi this is exactly tabvlm's `<|vision_start|>` + N x
`<|image_pad|>` + `<|vision_end|>`. The chat template is tabvlm's Qwen-style one.

Images: the processor (`GotOcr2ImageProcessorPil`, one tile, no cropping, mean = std = 0.5)
resizes to the square input size. tabvlm keeps the aspect ratio and pads with white at the right
and bottom: give the processor `tabvlm.image.fit_image(load_image(path), size)` (upright by
its EXIF orientation and already square, so the processor's resize leaves it as is) to get
tabvlm's pixels exactly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tabvlm.errors import TabVLMError
from tabvlm.model.config import ModelConfig
from tabvlm.model.vlm import TabVLM

log = logging.getLogger(__name__)

ARCHITECTURE = "Cohere2VisionForConditionalGeneration"

# Qwen-style chat; an image item becomes one `<|image_pad|>`, which the processor expands.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|image_pad|>{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise TabVLMError("exporting needs transformers: pip install 'tabvlm[hf]'") from e
    return transformers


def hf_config(config: ModelConfig, tokenizer: Any) -> Any:
    """The `Cohere2VisionConfig` for a TabVLM config (Llama text model, Qwen3 with QK-norm)."""
    tf = _transformers()
    v, lm = config.vision, config.lm
    vision = tf.SiglipVisionConfig(
        hidden_size=v.hidden_size,
        intermediate_size=v.intermediate_size,
        num_hidden_layers=v.num_layers,
        num_attention_heads=v.num_heads,
        num_channels=v.num_channels,
        image_size=v.image_size,
        patch_size=v.patch_size,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=v.layer_norm_eps,
        vision_use_head=False,
    )
    text_cls = tf.Qwen3Config if lm.qk_norm else tf.LlamaConfig
    text = text_cls(
        vocab_size=lm.vocab_size,
        hidden_size=lm.hidden_size,
        intermediate_size=lm.intermediate_size,
        num_hidden_layers=lm.num_layers,
        num_attention_heads=lm.num_heads,
        num_key_value_heads=lm.num_kv_heads,
        head_dim=lm.attn_head_dim,
        max_position_embeddings=lm.max_position_embeddings,
        rms_norm_eps=lm.rms_norm_eps,
        rope_theta=lm.rope_theta,
        attention_bias=lm.attention_bias,
        tie_word_embeddings=lm.tie_embeddings,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
    )
    mid = config.projector.intermediate_size or lm.hidden_size
    return tf.Cohere2VisionConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        downsample_factor=config.projector.scale_factor,
        image_token_id=config.image_token_id,
        alignment_intermediate_size=2 * mid,
        tie_word_embeddings=lm.tie_embeddings,
    )


def hf_state_dict(model: TabVLM) -> dict[str, torch.Tensor]:
    """tabvlm parameter names -> the checkpoint names of Cohere2VisionForConditionalGeneration
    (table in the docstring; the layout published checkpoints use, which vLLM reads too)."""
    prefixes = {
        "vision_model.": "model.vision_tower.vision_model.",
        "connector.": "model.multi_modal_projector.",
        "language_model.": "model.language_model.",
        "lm_head.": "lm_head.",
    }
    out = {}
    for name, tensor in model.state_dict().items():
        prefix = next(p for p in prefixes if name.startswith(p))
        out[prefixes[prefix] + name.removeprefix(prefix)] = tensor.detach().contiguous().cpu()
    if model.config.lm.tie_embeddings:
        del out["lm_head.weight"]  # tied to embed_tokens: stored once, as transformers does
    offset = model.config.vision.pixel_offset
    if offset:  # conv(x - o) == conv(x) with bias b - o * sum(W): exact, SigLIP has no offset
        emb = "model.vision_tower.vision_model.embeddings.patch_embedding."
        w = out[emb + "weight"]
        out[emb + "bias"] = out[emb + "bias"] - offset * w.sum(dim=(1, 2, 3))
    return out


def build_processor(config: ModelConfig, tokenizer: Any) -> Any:
    """The `Cohere2VisionProcessor`: tabvlm's tokenizer with its image tokens named, one-tile
    SigLIP-normalised images, the chat template."""
    tf = _transformers()
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    size = config.vision.image_size
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": size, "width": size},
        crop_to_patches=False,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    # Cohere2VisionProcessor reads the image tokens per side (one tile) from `patch_size`.
    image_processor.patch_size = config.vision.grid_size // config.projector.scale_factor
    hf_tok = tf.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.hf,
        eos_token=tokenizer.id_to_token(tokenizer.eos_id),
        pad_token=tokenizer.id_to_token(tokenizer.pad_id),
        padding_side="left",
        extra_special_tokens={
            "image_token": tokenizer.id_to_token(config.image_token_id),
            "boi_token": tokenizer.id_to_token(tokenizer.vision_start_id),
            "img_line_break_token": tokenizer.id_to_token(tokenizer.vision_end_id),
            "eoi_token": "",
        },
    )
    return tf.Cohere2VisionProcessor(
        image_processor=image_processor, tokenizer=hf_tok, chat_template=CHAT_TEMPLATE
    )


def export_hf(model: TabVLM, tokenizer: Any, out: str | Path) -> Path:
    """Write `out/` (config.json, model.safetensors, generation_config.json, tokenizer and
    processor files) for `AutoModelForImageTextToText` / `AutoProcessor`; returns the folder."""
    tf = _transformers()
    if model.config.vision.stem != "patch":
        raise TabVLMError(
            f"vision.stem {model.config.vision.stem!r} has no SigLIP equivalent; only 'patch' towers export"
        )
    if model.config.image_token_id != tokenizer.image_pad_id:
        raise TabVLMError(
            f"model image_token_id {model.config.image_token_id} is not the tokenizer's "
            f"<|image_pad|> id {tokenizer.image_pad_id}"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = hf_config(model.config, tokenizer)
    config.architectures = [ARCHITECTURE]
    config.save_pretrained(out)
    tf.GenerationConfig(
        eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id, do_sample=False
    ).save_pretrained(out)
    save_file(hf_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    build_processor(model.config, tokenizer).save_pretrained(out)
    log.info("exported %s to %s", ARCHITECTURE, out)
    (out / "tabvlm_export.json").write_text(
        json.dumps({"architecture": ARCHITECTURE, "image_size": model.config.vision.image_size}, indent=2)
        + "\n",
        encoding="utf-8",
    )
    return out
