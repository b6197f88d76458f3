"""The grid head: labels from a known grid, the grid they assemble back into, the ruling marks, a
tiny grid model that learns two tables, and a request's tag budget."""

import numpy as np
import torch
from PIL import Image, ImageDraw

from tabvlm.data.layout import (
    GAP_BINS,
    LayoutSample,
    collate_layout,
    encode_inputs,
    grid_hints,
    horizontal_gaps,
    layout_targets,
    ruling_marks,
    vertical_gaps,
)
from tabvlm.layout_decode import decode_grid
from tabvlm.layout_grid import (
    GRID_FIELDS,
    GRID_LOGITS,
    IGNORE,
    N_BINARY,
    SPAN_CLASSES,
    assemble_grid,
    label_logits,
)
from tabvlm.model.layout import LayoutModel
from tabvlm.read.words import Word
from tabvlm.tables.grid import Cell, Table
from tabvlm.tables.html import to_html
from tabvlm.train.layout import grid_head_loss

from .test_layout import TOK, tiny_config

# A header spanning two columns, a two-line cell, a row header spanning two rows.
TABLE = Table(4, 3, [
    Cell("Group", 0, 0), Cell("Result", 0, 1, colspan=2),
    Cell("north", 1, 0, rowspan=2), Cell("12", 1, 1), Cell("13", 1, 2),
    Cell("4 5", 2, 1), Cell("6", 2, 2),
    Cell("south east", 3, 0), Cell("7", 3, 1), Cell("", 3, 2),
])  # fmt: skip


def grid_page(table: Table = TABLE):
    """Words where a renderer would put them: a cell's words on one line, left aligned, except
    "south east" (two lines: a multi-line cell); a cell spanning rows centred on its rows;
    horizontal rulings under every row. (A header centred over two columns would bridge their
    gap, and a table of a few lines cannot tell that from one column: `grid_hints`.)"""
    cw, rh = 80, 40
    words, cells = [], []
    for i, c in enumerate(table.cells):
        parts = c.text.split()
        if not parts:
            continue
        if c.text == "south east":  # two lines inside one row
            lines = [[parts[0]], [parts[1]]]
        else:
            lines = [parts]
        y_mid = (c.row + c.rowspan / 2) * rh
        for k, line in enumerate(lines):
            y0 = y_mid - 6 * len(lines) + 12 * k
            x = c.col * cw + 4
            for w in line:
                words.append(Word(w, (x, y0, x + 8 * len(w), y0 + 10)))
                cells.append(i)
                x += 8 * len(w) + 6
    img = Image.new("RGB", (table.n_cols * cw, table.n_rows * rh), "white")
    draw = ImageDraw.Draw(img)
    for r in range(1, table.n_rows):
        draw.line([(0, r * rh), (table.n_cols * cw, r * rh)], fill="black", width=1)
    order = sorted(range(len(words)), key=lambda j: (words[j].box[1], words[j].box[0]))
    return img, [words[j] for j in order], [cells[j] for j in order]


def test_labels_assemble_back_into_the_table():
    img, words, cells = grid_page()
    x = encode_inputs(img, words, tiny_config(), TOK)
    labels = layout_targets(TABLE, cells, x).grid
    assert len(labels) == len(words) and all(len(lab) == len(GRID_FIELDS) for lab in labels)
    by_text = dict(zip((w.text for w in words), labels))
    assert by_text["south"][0] == 1  # row 3 starts with the first line of its two-line cell
    assert by_text["7"][0] == by_text["east"][0] == 0  # lines a little lower continue row 3
    assert by_text["north"][3:5] == [0, 1]  # reaches one row down (its word sits on the first)
    assert by_text["Result"][5:7] == [0, 1]  # reaches one column right
    table, word_cells = assemble_grid(words, x.lines.tolist(), x.bands.tolist(), label_logits(labels))
    assert to_html(table) == to_html(TABLE)
    assert [table.cells[k].text for k in word_cells] == [
        TABLE.cells[c].text if TABLE.cells[c].text != "south east" else "south east" for c in cells
    ]


def test_words_outside_the_table_are_left_out():
    img, words, cells = grid_page()
    caption = Word("Table", (0, 200, 40, 210))
    words, cells = [*words, caption], [*cells, -1]
    x = encode_inputs(img, words, tiny_config(), TOK)
    labels = layout_targets(TABLE, cells, x).grid
    assert labels[-1] == [IGNORE, IGNORE, 1, IGNORE, IGNORE, IGNORE, IGNORE]
    table, word_cells = assemble_grid(words, x.lines.tolist(), x.bands.tolist(), label_logits(labels))
    assert word_cells[-1] == -1 and "Table" not in to_html(table)
    assert to_html(table) == to_html(TABLE)


def test_conflicting_spans_are_cut_back_to_a_valid_grid():
    words = [Word("a", (0, 0, 10, 10)), Word("b", (50, 0, 60, 10)), Word("c", (0, 30, 10, 40))]
    logits = np.zeros((3, GRID_LOGITS))
    logits[:, :2] = 5.0  # every line a row, every band a column
    logits[:, 2] = -5.0
    logits[0, N_BINARY + 3 * SPAN_CLASSES + 3] = 9.0  # "a" claims three columns to its right
    logits[0, N_BINARY + 1 * SPAN_CLASSES + 3] = 9.0  # ... and three rows down
    table, _ = assemble_grid(words, [0, 0, 1], [0, 1, 0], logits)
    table.validate()
    assert (table.n_rows, table.n_cols) == (2, 2)
    assert [(c.text, c.rowspan, c.colspan) for c in table.cells] == [
        ("a", 1, 1),
        ("b", 1, 1),
        ("c", 1, 1),
        ("", 1, 1),
    ]


def test_no_words_is_an_empty_table():
    table, cells = assemble_grid([], [], [], np.zeros((0, GRID_LOGITS)))
    assert (table.n_rows, table.n_cols, cells) == (1, 1, [])


def test_horizontal_gaps_tell_a_word_space_from_a_column_gap():
    """A header wider than its column's data makes bands of its own words; the space between
    them (a fraction of a height) is what says they are one phrase, unlike a column gap."""
    words = [
        Word("All", (0, 0, 20, 10)),
        Word("companies", (23, 0, 80, 10)),  # a word space (3 px = 2.4 eighths of the height)
        Word("Total", (120, 0, 150, 10)),  # a column gap of 4 heights
        Word("21", (0, 20, 12, 30)),  # alone on its line
    ]
    lines, bands = grid_hints(words)
    assert len(set(bands[:2])) == 2  # the word space splits the band: the model must join them
    gaps = horizontal_gaps(words, lines)
    assert gaps.tolist() == [[GAP_BINS, 2], [2, GAP_BINS - 1], [GAP_BINS - 1, GAP_BINS], [GAP_BINS, GAP_BINS]]
    assert horizontal_gaps([], []).shape == (0, 2)


def test_a_folder_saved_with_two_gap_embeddings_computes_what_it_did(tmp_path):
    """The left / right gaps came after the shipped model: its folder lacks their embeddings,
    which load at zero, so its outputs do not change."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = LayoutModel(tiny_config(output="grid"))
    for emb in model.gap_embed:
        torch.nn.init.normal_(emb.weight)
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = {
        k: v for k, v in load_file(str(weights)).items() if not k.startswith(("gap_embed.2", "gap_embed.3"))
    }
    save_file(state, str(weights))
    loaded = LayoutModel.from_pretrained(tmp_path)
    assert not loaded.gap_embed[2].weight.any() and not loaded.gap_embed[3].weight.any()
    img, words, cells = grid_page(TABLE)
    x = encode_inputs(img, words, loaded.config, TOK)
    batch = collate_layout([LayoutSample(x, layout_targets(TABLE, cells, x), words)])
    two = dict(batch, gaps=batch["gaps"][..., :2])
    assert torch.equal(loaded.grid_logits(**batch), loaded.grid_logits(**two))


def test_ruling_marks_see_a_rule_between_two_lines():
    img = Image.new("L", (100, 60), 255)
    ImageDraw.Draw(img).line([(0, 30), (100, 30)], fill=0, width=1)
    words = [Word("a", (10, 10, 40, 22)), Word("b", (10, 38, 40, 50)), Word("c", (60, 38, 90, 50))]
    lines, _ = grid_hints(words)
    gaps = vertical_gaps(words)
    marks = ruling_marks(np.asarray(img), words, lines, gaps)
    assert marks[0, 1] == 4 and marks[1, 0] == 4  # below "a", above "b": the rule
    assert marks[0, 0] == 0 and marks[1, 1] == 0  # nothing above "a" or below "b"
    assert marks[1, 3] == 0 and marks[2, 2] == 0  # no vertical rule between "b" and "c"
    blank = ruling_marks(np.full((60, 100), 255, np.uint8), words, lines, gaps)
    assert not blank.any()


def test_a_tiny_grid_model_learns_two_tables():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = LayoutModel(cfg)
    plain = Table(2, 2, [Cell("a", 0, 0), Cell("b c", 0, 1), Cell("d", 1, 0), Cell("e", 1, 1)])
    data = []
    for t in (TABLE, plain):
        img, words, cells = grid_page(t)
        x = encode_inputs(img, words, cfg, TOK)
        data.append(LayoutSample(x, layout_targets(t, cells, x), words))
    batch = collate_layout(data)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss, stats = grid_head_loss(model, batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10
    model.eval()
    res = decode_grid(model, [d.inputs for d in data], [d.words for d in data])
    assert [to_html(r.table) for r in res] == [to_html(TABLE), to_html(plain)]
    assert res[0].finish_reason == "stop" and res[0].tags[-1] == "nl"


def test_a_tag_budget_keeps_the_first_rows():
    """A request's max_tokens reaches a grid model as a tag budget (the end tag included): the
    rows that fit, spans cut at the last row, finish reason "length"; a large budget changes
    nothing."""
    model = LayoutModel(tiny_config()).eval()
    img, words, cells = grid_page()
    x = encode_inputs(img, words, model.config, TOK)
    labels = layout_targets(TABLE, cells, x).grid
    model.grid_logits = lambda **_: torch.tensor(label_logits(labels), dtype=torch.float32)[None]
    full = decode_grid(model, [x], [words])[0]
    assert to_html(full.table) == to_html(TABLE) and full.finish_reason == "stop"
    assert decode_grid(model, [x], [words], max_tags=4 * 4 + 1)[0] == full  # 4 rows x (3 + nl) + end
    cut = decode_grid(model, [x], [words], max_tags=2 * 4 + 1)[0]
    assert cut.finish_reason == "length" and (cut.table.n_rows, cut.table.n_cols) == (2, 3)
    cut.table.validate()
    assert len(cut.tags) == 2 * 4
    north = next(c for c in cut.table.cells if c.text == "north")
    assert north.rowspan == 1  # it spanned rows 1-2 of 4; the cut keeps rows 0-1
    by_word = {w.text: (cut.table.cells[k].text if k >= 0 else None) for w, k in zip(words, cut.word_cells)}
    assert by_word["12"] == "12" and by_word["7"] is None and by_word["south"] is None
    tiny = decode_grid(model, [x], [words], max_tags=3)[0]
    assert tiny.table.n_rows == 1 and tiny.finish_reason == "length"


def test_the_start_decisions_are_learned_by_group():
    """row_start / col_start are decided by a line's or band's mean logit; the loss scores that
    mean, one term a group, so a big band cannot outvote a small one."""
    from tabvlm.train.layout import group_mean_logits

    z = torch.tensor([[1.0, 3.0, -2.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    t = torch.tensor([[1, 1, 0, -100], [1, -100, -100, -100]])
    groups = torch.tensor([[0, 0, 1, 1], [2, 0, 0, 0]])
    valid = t != -100
    mean, label = group_mean_logits(z, t, groups, valid)
    assert mean.tolist() == [2.0, -2.0, 4.0] and label.tolist() == [1.0, 0.0, 1.0]
