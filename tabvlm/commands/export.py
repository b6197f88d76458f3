"""Export a trained model to another framework's format.

Run as: tabvlm export --model MODEL_DIR --format hf --out OUT_DIR
`hf` writes a transformers folder (Cohere2VisionForConditionalGeneration: config, safetensors,
tokenizer, processor, chat template) that `AutoModelForImageTextToText` / `AutoProcessor` and
vLLM load with no remote code. The model's own tokenizer.json is used (the shipped one if the
folder has none). Needs transformers (`pip install 'tabvlm[hf]'`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tabvlm.model.vlm import TOKENIZER_NAME, TabVLM
from tabvlm.tokenizer import load_tokenizer


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tabvlm export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a saved tabvlm model folder")
    parser.add_argument("--format", choices=["hf"], default="hf", help="hf: a transformers folder")
    parser.add_argument("--out", required=True, help="the folder to write")
    args = parser.parse_args(argv)

    from tabvlm.hf.export import ARCHITECTURE, export_hf  # needs transformers: imported on use

    model = TabVLM.from_pretrained(args.model)
    tok_path = Path(args.model) / TOKENIZER_NAME
    tokenizer = load_tokenizer(tok_path if tok_path.is_file() else None)
    out = export_hf(model, tokenizer, args.out)  # errors (TabVLMError) are reported by tabvlm.cli
    print(f"wrote {out} ({ARCHITECTURE}); load it with transformers.AutoModelForImageTextToText")
    return 0
