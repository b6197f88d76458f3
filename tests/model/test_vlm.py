"""TabVLM: shapes, the image splice, the loss, save/load, parameter names."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tabvlm.errors import TabVLMError
from tabvlm.model import ImageTokenMismatchError, TabVLM, load_model_config
from tabvlm.model.projector import pixel_shuffle
from tabvlm.train.loss import mean_token_loss

TINY = Path(__file__).parents[2] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def model() -> TabVLM:
    torch.manual_seed(0)
    return TabVLM(load_model_config(TINY)).eval()


def prompt(
    model: TabVLM, n_images: int, text_len: int = 6, gen: torch.Generator | None = None
) -> torch.Tensor:
    """(1, T): some text, then each image's pad tokens, then more text."""
    gen = gen or torch.Generator().manual_seed(0)
    parts = [torch.randint(10, 12000, (text_len,), generator=gen)]
    for _ in range(n_images):
        parts += [torch.full((model.image_tokens,), model.config.image_token_id)]
        parts += [torch.randint(10, 12000, (text_len,), generator=gen)]
    return torch.cat(parts)[None]


def images(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 128, 128, generator=gen) * 2 - 1


def test_shapes(model):
    cfg = model.config
    assert model.image_tokens == cfg.image_tokens == (128 // 16) ** 2 // 2**2
    feats = model.encode_images(images(3))
    assert feats.shape == (3, model.image_tokens, cfg.lm.hidden_size)
    ids = torch.cat([prompt(model, 1), prompt(model, 1)])  # (2, T)
    out = model(ids, pixel_values=images(2))
    assert out.logits.shape == (2, ids.shape[1], cfg.lm.vocab_size)


def test_pixel_shuffle_folds_neighbour_blocks():
    grid = torch.arange(16.0).view(1, 16, 1)  # a 4x4 grid, row-major, one channel
    out = pixel_shuffle(grid, 2)  # (1, 4, 4)
    assert out[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


def test_image_features_replace_pad_embeddings_in_order(model):
    ids = prompt(model, 2)
    px = images(2)
    with torch.no_grad():
        embeds = model.embed(ids, px)
        feats = model.encode_images(px)
        plain = model.language_model.embed_tokens(ids)
    is_image = ids[0] == model.config.image_token_id
    assert torch.equal(embeds[0, is_image], feats.reshape(-1, feats.shape[-1]))
    assert torch.equal(embeds[0, ~is_image], plain[0, ~is_image])


def test_changing_the_image_changes_only_later_logits(model):
    ids = prompt(model, 1)
    first_image = int((ids[0] == model.config.image_token_id).nonzero()[0])
    with torch.no_grad():
        a = model(ids, pixel_values=images(1, seed=1)).logits
        b = model(ids, pixel_values=images(1, seed=2)).logits
    assert torch.equal(a[:, :first_image], b[:, :first_image])
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_image_token_count_mismatch_is_a_clear_error(model):
    ids = prompt(model, 1)
    ids[0, 7] = 42  # one pad token fewer
    with pytest.raises(
        ImageTokenMismatchError,
        match=r"prompt has 15 <\|image_pad\|> tokens for 1 image\(s\) of 16 tokens each",
    ):
        model(ids, pixel_values=images(1))
    with pytest.raises(ImageTokenMismatchError, match="for 2 image"):
        model(prompt(model, 1), pixel_values=images(2))
    with pytest.raises(ImageTokenMismatchError, match="16 <.*> tokens for 0 image"):
        model(prompt(model, 1))  # pad tokens but no pixels
    with pytest.raises(TabVLMError, match=r"expected \(N, 3, 128, 128\)"):
        model(prompt(model, 1), pixel_values=torch.zeros(1, 3, 64, 64))


def test_cached_decoding_with_an_image_matches_full_forward(model):
    ids = prompt(model, 1, text_len=5)
    px = images(1)
    with torch.no_grad():
        full = model(ids, pixel_values=px).logits
        cache = model.new_cache(1, ids.shape[1])
        pre = model(ids[:, :-4], pixel_values=px, cache=cache).logits
        rest = [model(ids[:, t : t + 1], cache=cache).logits for t in range(ids.shape[1] - 4, ids.shape[1])]
    assert (torch.cat([pre, *rest], dim=1) - full).abs().max() <= 1e-5


def test_the_training_loss_is_shifted_cross_entropy_ignoring_minus_100(model):
    """The loss that trains (LossModule: the head only where a target is) against the logits."""
    ids = prompt(model, 1)
    labels = ids.clone()
    labels[:, :25] = -100  # prompt and image: no loss
    loss = mean_token_loss(model, ids, labels, pixel_values=images(1))
    expected = F.cross_entropy(model(ids, pixel_values=images(1)).logits[0, 24:-1], ids[0, 25:])
    assert torch.allclose(loss, expected, atol=1e-6)


def test_parameter_names_follow_siglip_and_llama(model):
    names = set(model.state_dict())
    for name in [
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.embeddings.position_embedding.weight",
        "vision_model.encoder.layers.1.layer_norm1.weight",
        "vision_model.encoder.layers.1.self_attn.out_proj.bias",
        "vision_model.encoder.layers.1.mlp.fc2.weight",
        "vision_model.post_layernorm.weight",
        "connector.linear_1.weight",
        "language_model.embed_tokens.weight",
        "language_model.layers.1.self_attn.o_proj.weight",
        "language_model.layers.1.mlp.gate_proj.weight",
        "language_model.layers.1.post_attention_layernorm.weight",
        "language_model.norm.weight",
        "lm_head.weight",
    ]:
        assert name in names
    assert model.lm_head.weight is model.language_model.embed_tokens.weight  # tied


def test_save_load_round_trip_gives_identical_outputs(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    stored = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert "lm_head.weight" not in stored  # tied: stored once
    assert json.loads((tmp_path / "m" / "config.json").read_text())["lm"]["hidden_size"] == 128
    loaded = TabVLM.from_pretrained(tmp_path / "m")
    ids, px = prompt(model, 1), images(1)
    with torch.no_grad():
        assert torch.equal(model(ids, pixel_values=px).logits, loaded(ids, pixel_values=px).logits)
    assert loaded.lm_head.weight is loaded.language_model.embed_tokens.weight
    half = TabVLM.from_pretrained(tmp_path / "m", dtype=torch.bfloat16)
    assert half.lm_head.weight.dtype == torch.bfloat16


def test_save_writes_the_tokenizer_and_missing_files_are_named(model, tmp_path):
    class FakeTokenizer:
        def save(self, path: str) -> None:
            Path(path).write_text("{}")

    model.save_pretrained(tmp_path / "m", tokenizer=FakeTokenizer())
    assert (tmp_path / "m" / "tokenizer.json").read_text() == "{}"
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(TabVLMError, match="missing model.safetensors"):
        TabVLM.from_pretrained(tmp_path / "m")
    with pytest.raises(TabVLMError, match="no such model folder"):
        TabVLM.from_pretrained(tmp_path / "nothing")


def test_corrupt_or_mismatched_weights_are_one_line_errors(model, tmp_path, capsys):
    from PIL import Image

    from tabvlm import cli
    from tabvlm.tokenizer import load_tokenizer

    model.save_pretrained(tmp_path / "m", tokenizer=load_tokenizer())
    weights = tmp_path / "m" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # an interrupted copy
    with pytest.raises(TabVLMError, match="not a readable safetensors file") as e:
        TabVLM.from_pretrained(tmp_path / "m")
    assert str(e.value).startswith(f"{weights}: ") and "\n" not in str(e.value)
    Image.new("RGB", (40, 20), "white").save(tmp_path / "t.png")
    assert cli.main(["predict", "--model", str(tmp_path / "m"), str(tmp_path / "t.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tabvlm predict: error: {weights}: not a readable") and err.count("\n") == 1

    # weights of a narrower LM beside the tiny config.json
    torch.manual_seed(0)
    narrow = TabVLM(load_model_config(TINY, ["lm.hidden_size=64", "lm.num_heads=2", "lm.num_kv_heads=1"]))
    narrow.save_pretrained(tmp_path / "n")
    (tmp_path / "n" / "config.json").write_text((tmp_path / "m" / "config.json").read_text())
    with pytest.raises(TabVLMError) as e:
        TabVLM.from_pretrained(tmp_path / "n")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(
        f"{tmp_path / 'n' / 'model.safetensors'}: weights do not match {tmp_path / 'n' / 'config.json'}: "
        "connector.linear_1.weight is [128, 256] in the file, [256, 256] by the config (and "
    )
    # a tensor missing, another one extra
    model.save_pretrained(tmp_path / "k")
    state = load_file(str(tmp_path / "k" / "model.safetensors"))
    state["extra.weight"] = state.pop("language_model.norm.weight")
    save_file(state, str(tmp_path / "k" / "model.safetensors"))
    with pytest.raises(
        TabVLMError, match=r"1 missing \(language_model.norm.weight\); 1 unexpected \(extra.weight\)$"
    ):
        TabVLM.from_pretrained(tmp_path / "k")


def test_pixel_offset_equals_a_folded_patch_bias():
    # conv(x - o) == conv(x) with bias b - o * sum(W): white paper (+1) becomes 0 for the tower,
    # and a SigLIP-layout export stays exact by folding the offset into the bias.
    cfg = load_model_config(TINY, ["vision.pixel_offset=1.0"])
    torch.manual_seed(0)
    shifted = TabVLM(cfg).eval()
    plain_cfg = load_model_config(TINY)
    plain = TabVLM(plain_cfg).eval()
    state = shifted.state_dict()
    key = "vision_model.embeddings.patch_embedding."
    state[key + "bias"] = state[key + "bias"] - state[key + "weight"].sum(dim=(1, 2, 3))
    plain.load_state_dict(state)
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(shifted.encode_images(x), plain.encode_images(x), atol=1e-5, rtol=1e-4)
        white = torch.ones(1, 3, 128, 128)
        emb = shifted.vision_model.embeddings
        patches = emb.patch_embedding(white - 1.0)  # what the tower's conv sees for blank paper
        assert patches.abs().max() == 0  # zero bias at init: blank paper is exactly 0


def test_conv_stem_keeps_the_token_grid_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = TabVLM(load_model_config(TINY, ["vision.stem=conv"])).eval()
    stem = model.vision_model.embeddings.patch_embedding
    assert sum(isinstance(m, torch.nn.Conv2d) for m in stem) == 4  # 16 px patches: four stride-2 convs
    feats = model.encode_images(images(2))
    assert feats.shape == (2, model.image_tokens, model.config.lm.hidden_size)
    # He init, not the 0.02 normal of the rest: the stem's output keeps the pixels' scale
    out = stem(images(2).float() - model.config.vision.pixel_offset)
    assert 0.1 < out.std() < 10
    model.save_pretrained(tmp_path / "m")
    again = TabVLM.from_pretrained(tmp_path / "m")
    ids = prompt(model, 1)
    torch.testing.assert_close(
        again(ids, pixel_values=images(1)).logits, model(ids, pixel_values=images(1)).logits
    )


def test_conv_stem_rejects_what_it_cannot_do():
    from tabvlm.errors import ConfigError
    from tabvlm.model.config import VisionConfig

    with pytest.raises(ConfigError, match="stem"):
        VisionConfig(stem="resnet")
    with pytest.raises(ConfigError, match="power-of-two"):
        VisionConfig(image_size=96, patch_size=12, stem="conv")
    with pytest.raises(ConfigError, match="SigLIP"):
        VisionConfig(stem="conv", pretrained="/some/siglip")
