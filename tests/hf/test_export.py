"""HF export: the tiny model (fixed seed) exported, loaded with transformers' Auto classes (no
remote code), gives tabvlm's greedy tokens and logits."""

from __future__ import annotations

import random

import pytest
import torch
import transformers  # a dev dependency: a missing install fails, never skips
from PIL import Image, ImageDraw

from tabvlm.commands.export import main as export_main
from tabvlm.generate import generate, image_prompt
from tabvlm.image import fit_image, load_image, preprocess_images
from tabvlm.model.config import load_model_config
from tabvlm.model.vlm import TabVLM
from tabvlm.tasks import user_prompt
from tabvlm.tokenizer import load_tokenizer

NEW_TOKENS = 12


def table_image(seed: int) -> Image.Image:
    """A random ruled grid with dark blocks for text, not square (exercises the padding)."""
    rng = random.Random(seed)
    w, h = rng.randint(150, 300), rng.randint(60, 140)
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    rows, cols = rng.randint(2, 5), rng.randint(2, 4)
    for r in range(rows + 1):
        draw.line([(0, r * (h - 1) // rows), (w, r * (h - 1) // rows)], fill="black")
    for c in range(cols + 1):
        draw.line([(c * (w - 1) // cols, 0), (c * (w - 1) // cols, h)], fill="black")
    for _ in range(rows * cols):
        x, y = rng.randrange(w - 20), rng.randrange(h - 8)
        draw.rectangle([x, y, x + rng.randint(5, 20), y + 5], fill=(rng.randrange(80),) * 3)
    return img


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(tabvlm model, tokenizer, HF model, HF processor), exported through the CLI."""
    torch.manual_seed(0)
    model = TabVLM(load_model_config("configs/tiny.yaml")).eval()
    tok = load_tokenizer()
    root = tmp_path_factory.mktemp("export")
    model.save_pretrained(root / "model", tokenizer=tok)
    assert export_main(["--model", str(root / "model"), "--format", "hf", "--out", str(root / "hf")]) == 0
    hf = transformers.AutoModelForImageTextToText.from_pretrained(root / "hf").eval()
    proc = transformers.AutoProcessor.from_pretrained(root / "hf")
    return model, tok, hf, proc


def hf_inputs(proc, images: list[Image.Image], size: int):
    text = user_prompt("html").replace("<image>", "")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = proc.apply_chat_template(messages, add_generation_prompt=True)
    return proc(
        images=[fit_image(im, size) for im in images], text=[prompt] * len(images), return_tensors="pt"
    )


def test_exported_folder_loads_as_a_shipped_architecture(exported):
    _, _, hf, proc = exported
    assert type(hf).__name__ == "Cohere2VisionForConditionalGeneration"
    assert type(proc).__name__ == "Cohere2VisionProcessor"


def test_processor_gives_tabvlm_prompt_ids_and_pixels(exported):
    model, tok, _, proc = exported
    images = [table_image(0), table_image(1)]
    inputs = hf_inputs(proc, images, model.config.vision.image_size)
    want_ids = tok.encode(image_prompt(tok, model.image_tokens))
    assert inputs["input_ids"].tolist() == [want_ids, want_ids]
    want_px = preprocess_images(images, model.config.vision.image_size)
    assert (inputs["pixel_values"] - want_px).abs().max() <= 1e-6


def test_logits_match(exported):
    model, tok, hf, proc = exported
    inputs = hf_inputs(proc, [table_image(2)], model.config.vision.image_size)
    with torch.no_grad():
        want = model(inputs["input_ids"], inputs["pixel_values"]).logits
        got = hf(**inputs).logits
    assert (got - want).abs().max() <= 1e-4


def test_greedy_generation_matches_on_three_images(exported):
    model, tok, hf, proc = exported
    size = model.config.vision.image_size
    for seed in (3, 4, 5):
        image = table_image(seed)
        ours = generate(
            model,
            tok,
            preprocess_images([image], size),
            [image_prompt(tok, model.image_tokens)],
            max_new_tokens=NEW_TOKENS,
            constrain=False,
        ).tokens[0]
        inputs = hf_inputs(proc, [image], size)
        with torch.no_grad():
            out = hf.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
        theirs = out[0, inputs["input_ids"].shape[1] :].tolist()
        if theirs and theirs[-1] == tok.eos_id:
            theirs = theirs[:-1]  # tabvlm's tokens exclude the stop token
        assert theirs == ours


def test_processor_on_an_exif_rotated_photo_sees_what_tabvlm_sees(exported, tmp_path):
    """The export's documented input (`tabvlm.image.fit_image` of `load_image`) keeps the EXIF
    orientation that predict, the server and training apply."""
    model, _, _, proc = exported
    size = model.config.vision.image_size
    stored = table_image(6)  # landscape as stored; EXIF orientation 6: show it turned 90 degrees
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "photo.jpg", quality=95, exif=exif.tobytes())
    with Image.open(tmp_path / "photo.jpg") as im:
        upright = im.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    inputs = hf_inputs(proc, [load_image(tmp_path / "photo.jpg")], size)
    assert (inputs["pixel_values"][0] - preprocess_images([upright], size)[0]).abs().max() <= 1e-6
