"""The tiny model learns one (image, HTML) pair: loss near zero in 120 steps, greedy decoding reproduces it."""

from pathlib import Path

import pytest
import torch

from tabvlm.model import TabVLM, load_model_config
from tabvlm.tasks import user_prompt
from tabvlm.tokenizer import load_tokenizer
from tabvlm.train.loss import mean_token_loss

TINY = Path(__file__).parents[2] / "configs" / "tiny.yaml"
HTML = (
    '<table><thead><tr><td colspan="2">Region</td><td>Sales</td></tr></thead>'
    "<tbody><tr><td>North</td><td>华北</td><td>1,204.5</td></tr>"
    "<tr><td>South</td><td>华南</td><td>987</td></tr></tbody></table>"
)


@pytest.fixture
def one_thread():
    # On a shared 2-core machine, intra-op threads spin against each other: one is ~10x faster.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tiny_model_overfits_one_table(one_thread):
    torch.manual_seed(0)
    model = TabVLM(load_model_config(TINY))
    tok = load_tokenizer()
    assert tok.image_pad_id == model.config.image_token_id and tok.vocab_size <= model.config.lm.vocab_size
    user = tok.expand_image(user_prompt("html"), model.image_tokens)
    prefix = tok.encode(tok.chat_prompt([{"role": "user", "content": user}], add_generation_prompt=True))
    answer = tok.encode(HTML) + [tok.eos_id]
    ids = torch.tensor([prefix + answer])  # (1, T)
    labels = ids.clone()
    labels[:, : len(prefix)] = -100  # loss on the assistant's tokens only
    pixels = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(120):
        loss = mean_token_loss(model, ids, labels, pixel_values=pixels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05

    model.eval()
    cache = model.new_cache(1, ids.shape[1] + 4)
    with torch.no_grad():
        logits = model(torch.tensor([prefix]), pixel_values=pixels, cache=cache).logits
        out: list[int] = []
        while len(out) < len(answer):
            out.append(int(logits[0, -1].argmax()))
            if out[-1] == tok.eos_id:
                break
            logits = model(torch.tensor([[out[-1]]]), cache=cache).logits
    assert out == answer
    assert tok.decode(out[:-1]) == HTML
