"""Dataset: preprocessing, loss masks, collate, packing, jsonl records, the synthetic stream."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from tabvlm.config import from_dict
from tabvlm.data.dataset import (
    IGNORE_INDEX,
    DataConfig,
    JsonlDataset,
    SynthSamples,
    collate,
    encode_conversation,
    pack,
)
from tabvlm.data.synth import SynthConfig
from tabvlm.errors import ConfigError, DataError
from tabvlm.model.config import load_model_config
from tabvlm.model.vlm import TabVLM
from tabvlm.tasks import user_prompt
from tabvlm.tokenizer import IM_END, load_tokenizer

ROOT = Path(__file__).resolve().parents[2]
HTML = '<table><thead><tr><td colspan="2">年份 &amp; Q</td></tr></thead><tbody><tr><td>1</td><td></td></tr></tbody></table>'


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def mcfg():
    return load_model_config(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def dcfg(mcfg):
    # Small tables keep rendering fast; both table tasks in the mix.
    synth = SynthConfig(rows=(2, 5), cols=(2, 4))
    return DataConfig(
        synth=synth, tasks={"html": 1.0, "otsl": 1.0}, image_size=mcfg.vision.image_size, max_len=512
    )


def conversation(answer2: str = "Two rows.") -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You read tables."},
        {"role": "user", "content": user_prompt("html")},
        {"role": "assistant", "content": "\n" + HTML},  # a leading newline: the header must not absorb it
        {"role": "user", "content": "How many rows?"},
        {"role": "assistant", "content": answer2},
    ]


def label_runs(tok, enc) -> list[str]:
    """Decoded text of each contiguous run of loss-covered tokens."""
    runs, cur = [], []
    for i, lab in zip(enc["input_ids"].tolist(), enc["labels"].tolist()):
        if lab != IGNORE_INDEX:
            assert lab == i  # labels are aligned with input_ids, not shifted
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    return [tok.decode(r) for r in runs + ([cur] if cur else [])]


# --- conversations -> tokens ------------------------------------------------------------------


def test_loss_mask_covers_exactly_the_assistant_turns(tok, mcfg):
    conv = conversation()
    enc = encode_conversation(tok, conv, mcfg.image_tokens, 1024, n_images=1)
    assert label_runs(tok, enc) == ["\n" + HTML + IM_END, "Two rows." + IM_END]
    # Everything together is the chat template with the image expanded, nothing lost or added.
    text = tok.expand_image(tok.chat_prompt(conv), mcfg.image_tokens)
    assert tok.decode(enc["input_ids"].tolist()) == text
    # The masked token right before each answer closes the assistant header.
    ids, labels = enc["input_ids"].tolist(), enc["labels"].tolist()
    starts = [t for t in range(1, len(ids)) if labels[t] != IGNORE_INDEX and labels[t - 1] == IGNORE_INDEX]
    for t in starts:
        assert tok.decode(ids[:t]).endswith("<|im_start|>assistant\n")
    # The answer's tokens are what generation after the assistant header would produce.
    head = tok.encode(
        tok.expand_image(tok.chat_prompt(conv[:2], add_generation_prompt=True), mcfg.image_tokens)
    )
    assert ids[: len(head)] == head
    answer = tok.encode("\n" + HTML) + [tok.eos_id]
    assert ids[len(head) : len(head) + len(answer)] == answer


def test_image_placeholder_expands_to_the_model_image_tokens(tok, mcfg):
    enc = encode_conversation(tok, conversation(), mcfg.image_tokens, 1024, n_images=1)
    ids = enc["input_ids"]
    assert mcfg.image_tokens == 16  # tiny: 128 px, 16 px patches, pixel shuffle 2
    assert int((ids == tok.image_pad_id).sum()) == mcfg.image_tokens
    (vs,) = (ids == tok.vision_start_id).nonzero()[:, 0].tolist()
    (ve,) = (ids == tok.vision_end_id).nonzero()[:, 0].tolist()
    assert ve - vs - 1 == mcfg.image_tokens
    assert (enc["labels"][vs : ve + 1] == IGNORE_INDEX).all()


def test_placeholder_count_must_match_the_images(tok):
    with pytest.raises(DataError, match="expected 0 <image> placeholder"):
        encode_conversation(tok, conversation(), 16, 1024, n_images=0)
    with pytest.raises(DataError, match="no assistant turn"):
        encode_conversation(tok, conversation()[:2], 16, 1024)


def test_too_long_raises_instead_of_truncating(tok, mcfg):
    n = len(encode_conversation(tok, conversation(), mcfg.image_tokens, 1024)["input_ids"])
    assert len(encode_conversation(tok, conversation(), mcfg.image_tokens, n)["input_ids"]) == n
    with pytest.raises(DataError, match=f"{n} tokens, more than max_len={n - 1}"):
        encode_conversation(tok, conversation(), mcfg.image_tokens, n - 1)


# --- collate and packing ----------------------------------------------------------------------


def fake_sample(tok, n_image_tokens: int, answer: str, fill: float) -> dict:
    """A one-image sample whose pixels are all `fill` (to follow images through a batch)."""
    conv = [{"role": "user", "content": user_prompt("html")}, {"role": "assistant", "content": answer}]
    enc = encode_conversation(tok, conv, n_image_tokens, 512, n_images=1)
    return {"pixel_values": torch.full((1, 3, 128, 128), fill), **enc}


def test_collate_pads_right_and_masks(tok, mcfg):
    samples = [fake_sample(tok, mcfg.image_tokens, a, f) for a, f in [("x", 0.1), (HTML, 0.2), ("yy", 0.3)]]
    lens = [len(s["input_ids"]) for s in samples]
    batch = collate(samples, pad_id=tok.pad_id, pad_to_multiple_of=8)
    T = -(-max(lens) // 8) * 8
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, T)
    for i, (s, n) in enumerate(zip(samples, lens)):
        assert torch.equal(batch["input_ids"][i, :n], s["input_ids"])
        assert torch.equal(batch["labels"][i, :n], s["labels"])
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (T - n)
        assert (batch["input_ids"][i, n:] == tok.pad_id).all()
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all()
    assert batch["pixel_values"].shape == (3, 3, 128, 128)
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == pytest.approx([0.1, 0.2, 0.3])


def test_pack_keeps_segments_separate_and_labels_aligned(tok, mcfg):
    answers = ["a", HTML, "b", HTML + HTML, "c"]
    samples = [fake_sample(tok, mcfg.image_tokens, a, (k + 1) / 10) for k, a in enumerate(answers)]
    lens = [len(s["input_ids"]) for s in samples]
    max_len = max(lens) + min(lens)  # forces several rows, some holding two samples or more
    batch = pack(samples, max_len=max_len, pad_id=tok.pad_id)
    seg, ids, labels = batch["segment_ids"], batch["input_ids"], batch["labels"]
    assert ids.shape[1] == max_len and 1 < ids.shape[0] < len(samples)
    assert torch.equal(batch["attention_mask"], (seg > 0).long())
    # Every sample appears exactly once, intact, as one segment; images follow their pad runs.
    found, fills = [], []
    for r in range(ids.shape[0]):
        for k in range(1, int(seg[r].max()) + 1):
            where = (seg[r] == k).nonzero()[:, 0]
            assert torch.equal(where, torch.arange(where[0], where[-1] + 1))  # contiguous
            sample = next(i for i, s in enumerate(samples) if torch.equal(s["input_ids"], ids[r, where]))
            assert torch.equal(labels[r, where], samples[sample]["labels"])
            assert labels[r, where[0]] == IGNORE_INDEX  # the shifted loss never crosses segments
            found.append(sample)
            fills.append((sample + 1) / 10)
        assert (labels[r][seg[r] == 0] == IGNORE_INDEX).all()
    assert sorted(found) == list(range(len(samples)))
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == pytest.approx(fills)
    with pytest.raises(DataError, match="more than the packing length"):
        pack(samples, max_len=min(lens) - 1, pad_id=tok.pad_id)


def test_packed_rows_give_the_same_logits_as_separate_samples(tok, mcfg):
    torch.manual_seed(0)  # test-only: the model's init; the data path draws no global randomness
    model = TabVLM(mcfg).eval()
    samples = [fake_sample(tok, mcfg.image_tokens, a, f) for a, f in [("x", -0.5), ("<table></table>", 0.5)]]
    lens = [len(s["input_ids"]) for s in samples]
    packed = pack(samples, max_len=sum(lens) + 3, pad_id=tok.pad_id)
    assert packed["input_ids"].shape[0] == 1  # both in one row
    with torch.no_grad():
        row = model(
            **{k: packed[k] for k in ("input_ids", "pixel_values", "attention_mask", "segment_ids")}
        ).logits
        for k, s in enumerate(samples):
            alone = model(s["input_ids"][None], s["pixel_values"]).logits[0]
            start = sum(lens[:k])
            torch.testing.assert_close(row[0, start : start + lens[k]], alone, atol=1e-4, rtol=1e-4)


# --- jsonl records ----------------------------------------------------------------------------


def write_jsonl(tmp_path: Path) -> Path:
    Image.new("RGB", (40, 20), "white").save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    lines = []
    for name, answer in [("good.png", HTML), ("bad.png", "<table></table>"), ("good.png", "second")]:
        conv = [{"role": "user", "content": user_prompt("html")}, {"role": "assistant", "content": answer}]
        lines.append(json.dumps({"image": name, "conversations": conv}))
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_corrupt_image_raises_with_file_and_line(tmp_path, tok, mcfg):
    path = write_jsonl(tmp_path)
    ds = JsonlDataset(path, tok, 128, mcfg.image_tokens, 512)
    assert len(ds) == 3
    s = ds[0]
    assert s["pixel_values"].shape == (1, 3, 128, 128)
    assert label_runs(tok, s) == [HTML + IM_END]
    with pytest.raises(DataError, match="corrupt image") as e:
        ds[1]
    assert (e.value.file, e.value.line) == (str(path), 2)
    assert str(e.value).startswith(f"{path}:2: ")
    with pytest.raises(IndexError):
        ds[3]


def test_jsonl_skip_is_logged_and_deterministic(tmp_path, tok, mcfg, caplog):
    path = write_jsonl(tmp_path)
    ds = JsonlDataset(path, tok, 128, mcfg.image_tokens, 512, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="tabvlm.data.dataset"):
        s = ds[1]  # bad: replaced by the next good record, every time
    assert f"{path}:2:" in caplog.text
    assert label_runs(tok, s) == ["second" + IM_END]
    assert torch.equal(ds[1]["input_ids"], s["input_ids"])


def test_jsonl_too_long_names_the_line(tmp_path, tok, mcfg):
    path = write_jsonl(tmp_path)
    ds = JsonlDataset(path, tok, 128, mcfg.image_tokens, 40)
    with pytest.raises(DataError, match="more than max_len=40") as e:
        ds[0]
    assert e.value.line == 1


# --- synthetic samples ---------------------------------------------------------------------


def test_data_config_from_yaml_dict_and_bad_tasks():
    cfg = from_dict(DataConfig, {"tasks": {"otsl": 2}, "synth": {"rows": [2, 4]}, "image_size": 256})
    assert cfg.tasks == {"otsl": 2} and cfg.synth.rows == (2, 4) and cfg.image_size == 256
    with pytest.raises(ConfigError, match="unknown synthetic task"):
        DataConfig(tasks={"formula": 1.0})
    with pytest.raises(ConfigError, match="positive sum"):
        DataConfig(tasks={"html": 0.0})


def test_same_seed_same_samples_other_seed_other(tok, mcfg, dcfg):
    a = SynthSamples(dcfg, tok, mcfg.image_tokens)
    b = SynthSamples(dcfg, tok, mcfg.image_tokens)
    c = SynthSamples(dataclasses.replace(dcfg, seed=1), tok, mcfg.image_tokens)
    for i in (0, 7):
        sa, sb, sc = a(i), b(i), c(i)
        assert torch.equal(sa["input_ids"], sb["input_ids"]) and torch.equal(
            sa["pixel_values"], sb["pixel_values"]
        )
        assert not torch.equal(sa["pixel_values"], sc["pixel_values"])
        assert sa["pixel_values"].shape == (1, 3, 128, 128)
        assert int((sa["input_ids"] == tok.image_pad_id).sum()) == mcfg.image_tokens


def test_sample_i_is_the_same_in_training_synth_and_the_web_ui(tok, mcfg, tmp_path):
    """One synthetic sample source: sample i of a seed through `tabvlm synth`, the web UI's
    examples (and the benches: both call make_sample) and the training data is the same image,
    byte for byte, with the same html target."""
    from tabvlm.commands import synth as synth_cmd
    from tabvlm.image import load_image, preprocess_image
    from tabvlm.serve.ui import EXAMPLE_SEED, N_SYNTH_EXAMPLES, example_configs, example_images

    synth, render = example_configs()
    ui = example_images(None, tmp_path)
    overrides = ["synth.rows=[3,7]", "synth.cols=[2,5]", "synth.zh_rate=0", "render.rotate_rate=0",
                 "render.blur_rate=0", "render.noise_rate=0"]  # fmt: skip
    out = tmp_path / "synth"
    args = ["--n", str(N_SYNTH_EXAMPLES), "--seed", str(EXAMPLE_SEED), "--out", str(out)]
    assert synth_cmd.main([*args, *overrides]) == 0
    records = [json.loads(line) for line in (out / "gt.jsonl").read_text().splitlines()]
    data = DataConfig(
        synth=synth, render=render, image_size=mcfg.vision.image_size, max_len=4096, seed=EXAMPLE_SEED
    )
    training = SynthSamples(data, tok, mcfg.image_tokens)
    for i in range(N_SYNTH_EXAMPLES):
        from_ui, from_synth = Image.open(ui[i]), Image.open(out / records[i]["image"])
        assert from_ui.size == from_synth.size and from_ui.tobytes() == from_synth.tobytes()
        sample = training(i)
        assert torch.equal(
            sample["pixel_values"][0],
            preprocess_image(load_image(out / records[i]["image"]), data.image_size),
        )
        target = tok.decode(
            [t for t in sample["labels"].tolist() if t != IGNORE_INDEX][:-1]
        )  # <|im_end|> cut
        assert target == records[i]["conversations"][1]["content"]


def test_variants_draw_their_share_and_sample_i_matches_tabvlm_synth(tok, mcfg, tmp_path):
    """`data.variants`: each index draws one variant's settings by its weight, and `tabvlm synth`
    with the same variants writes the same sample i as training."""
    from tabvlm.commands import synth as synth_cmd
    from tabvlm.image import load_image, preprocess_image

    small = {"weight": 0.5, "synth": {"rows": [1, 2], "cols": [1, 2]}, "render": {"width": [100, 200]}}
    data = from_dict(
        DataConfig,
        {"synth": {"rows": [5, 8], "cols": [4, 6]}, "variants": [small], "image_size": mcfg.vision.image_size,
         "max_len": 4096, "seed": 3},
    )  # fmt: skip
    drawn = [data.draw_configs(i) for i in range(400)]
    n_small = sum(s.rows == (1, 2) and r.width == (100, 200) for s, r in drawn)
    assert 160 <= n_small <= 240 and all(s.rows in ((1, 2), (5, 8)) for s, _ in drawn)
    # the variant keeps every setting it does not name
    assert {s.cols for s, _ in drawn} == {(1, 2), (4, 6)} and {s.zh_rate for s, _ in drawn} == {0.5}

    config = tmp_path / "v.yaml"
    config.write_text(yaml.safe_dump({"synth": {"rows": [5, 8], "cols": [4, 6]}, "variants": [small]}))
    out = tmp_path / "synth"
    assert synth_cmd.main(["--n", "6", "--seed", "3", "--out", str(out), "--config", str(config)]) == 0
    records = [json.loads(line) for line in (out / "gt.jsonl").read_text().splitlines()]
    training = SynthSamples(data, tok, mcfg.image_tokens)
    rows = []
    for i, record in enumerate(records):
        sample = training(i)
        assert torch.equal(
            sample["pixel_values"][0], preprocess_image(load_image(out / record["image"]), data.image_size)
        )
        target = tok.decode([t for t in sample["labels"].tolist() if t != IGNORE_INDEX][:-1])
        assert target == record["conversations"][1]["content"]
        rows.append(target.count("<tr>"))
    assert [r <= 2 for r in rows] == [s.rows == (1, 2) for s, _ in drawn[:6]]


def test_bad_variants_are_config_errors_naming_the_variant():
    with pytest.raises(ConfigError, match=r"data.variants\[0\].synth: unknown key\(s\) rowz"):
        from_dict(DataConfig, {"variants": [{"weight": 0.5, "synth": {"rowz": [1, 2]}}]})
    with pytest.raises(ConfigError, match=r"data.variants\[1\].render"):
        from_dict(
            DataConfig, {"variants": [{"weight": 0.2}, {"weight": 0.2, "render": {"width": [500, 100]}}]}
        )
    with pytest.raises(ConfigError, match="data.variants: weights sum to 1.2, over 1"):
        from_dict(DataConfig, {"variants": [{"weight": 0.7}, {"weight": 0.5}]})


def test_trainstream_plan_is_disjoint_independent_of_workers_and_resumes(tok, mcfg, dcfg):
    from tabvlm.train.data import SampleSource, TrainStream

    def consumed(rank: int, world: int, workers: int, start: int = 0, n: int = 24, bs: int = 3) -> list[int]:
        """The global indices in the order a DataLoader (round-robin over workers) hands them out."""
        stream = TrainStream(SampleSource(1.0, lambda g: g, [], 0), rank, world, start, bs)
        loader = torch.utils.data.DataLoader(stream, batch_size=bs, num_workers=workers, collate_fn=list)
        out: list[int] = []
        for batch in loader:
            out.extend(batch)
            if len(out) >= n:
                return out[:n]
        raise AssertionError("unreachable: the stream is endless")

    one = consumed(0, 1, 0)
    assert one == list(range(24))
    assert consumed(0, 1, 2) == one  # the worker count does not change the stream
    r0, r1 = consumed(0, 2, 2), consumed(1, 2, 1)
    assert r0 == list(range(0, 48, 2)) and r1 == list(range(1, 48, 2))
    assert consumed(1, 2, 2, start=6, n=12) == r1[6:18]  # resume after 6 consumed samples


def test_overlong_synthetic_samples_are_redrawn(tok, mcfg, dcfg, caplog):
    prompt = tok.chat_prompt([{"role": "user", "content": user_prompt("otsl")}], add_generation_prompt=True)
    n = len(tok.encode(tok.expand_image(prompt, mcfg.image_tokens))) + 2  # room for no 2x2 table
    tight = dataclasses.replace(dcfg, max_len=n, tasks={"otsl": 1.0})
    samples = SynthSamples(tight, tok, mcfg.image_tokens)
    with caplog.at_level(logging.WARNING, logger="tabvlm.data.dataset"):
        with pytest.raises(DataError, match=f"draws were all over max_len={n}"):
            samples(0)
    assert "redrawn" in caplog.text
