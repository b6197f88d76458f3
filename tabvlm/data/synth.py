"""Random table grids with realistic content: `synthesize(rng, cfg) -> Table`.

A table is planned the way real ones are: pick a size, give each column a type (row labels,
integers, money, percentages, dates, codes, long notes, ...), fill the body column by column so a
numeric column stays numeric with one format, then lay headers (1-3 rows, multi-level ones grouped
with colspan) and body spans (merged row-label groups, full-width section rows, small merged
blocks). Text comes from word/name/company pools that faker pre-generates once per
(pool_seed, pool_size): faker calls are slow, drawing from a list is not.

Everything random is drawn from the `random.Random` passed in, so the same seed gives the same
table. Cell text is normalised (single spaces, no newlines); wrapping is the renderer's job.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from tabvlm.errors import ConfigError
from tabvlm.tables.grid import Cell, Table

_WS = re.compile(r"\s+")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass
class SynthConfig:
    """Controls of the grid generator. Rates are probabilities in [0, 1]."""

    rows: tuple[int, int] = (1, 40)  # total rows (header + body), inclusive range
    cols: tuple[int, int] = (1, 15)
    header_rows: tuple[int, int] = (1, 3)  # when the table has a header; small counts are likelier
    no_header_rate: float = 0.05  # tables with no header row at all
    zh_rate: float = 0.5  # tables whose words are Chinese (codes and numbers stay ASCII)
    mix_rate: float = 0.2  # Chinese tables that also carry English words
    span_rate: float = 0.4  # tables that may hold spans (0: none at all)
    blank_rate: float = 0.3  # tables that may hold empty cells (0: none at all)
    blank_cell_rate: float = 0.12  # share of body cells left empty in such tables
    long_text_rate: float = 0.25  # tables with a long-text column (cells that wrap)
    row_label_rate: float = 0.7  # first column holds row labels
    escape_rate: float = 0.05  # tables where some cells carry & < >
    pool_size: int = 300  # faker items per pool
    pool_seed: int = 0  # seeds the faker pools (not the tables)
    # Content controls, for narrow tasks (the quickstart): None / the defaults draw everything.
    column_types: dict[str, float] | None = None  # kind -> weight; None: the built-in mix
    label_sources: tuple[str, ...] = ("words", "phrases", "cities", "jobs", "companies")
    number_magnitudes: tuple[int, ...] = (10, 100, 1000, 10_000, 1_000_000)  # int/decimal/money scale
    max_word_len: int = 0  # > 0: headers, labels and statuses only from list items this short
    # Document content (the browser renderer's style families ask for it). Each is a share of
    # tables; at 0 (the defaults) nothing is drawn for it, so the default stream is unchanged.
    unit_rate: float = 0.0  # numeric columns' headers carry units: "(USD million)", "（万元）", "(m2)"
    long_header_rate: float = 0.0  # some headers are long phrases that wrap over several lines
    footnote_rate: float = 0.0  # a few cells carry footnote marks: "12.5a", "Total*", "利润†"
    pm_rate: float = 0.0  # decimal columns read "mean ± sd"
    hierarchy_rate: float = 0.0  # row headers in groups: a heading row (blank values), indented children

    def __post_init__(self) -> None:
        for name in ("rows", "cols", "header_rows"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi or (name != "header_rows" and lo < 1):
                raise ConfigError(f"synth.{name}: expected an increasing range of sizes, found ({lo}, {hi})")
        for name in (
            "no_header_rate", "zh_rate", "mix_rate", "span_rate", "blank_rate", "blank_cell_rate",
            "long_text_rate", "row_label_rate", "escape_rate", "unit_rate", "long_header_rate",
            "footnote_rate", "pm_rate", "hierarchy_rate",
        ):  # fmt: skip
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"synth.{name}: expected a rate in [0, 1], found {getattr(self, name)}")
        if self.pool_size < 10:
            raise ConfigError(f"synth.pool_size: expected >= 10, found {self.pool_size}")
        if self.column_types is not None:
            unknown = sorted(set(self.column_types) - set(COLUMN_TYPES))
            if unknown:
                raise ConfigError(
                    f"synth.column_types: unknown kind(s) {unknown}; known: {list(COLUMN_TYPES)}"
                )
            if any(w < 0 for w in self.column_types.values()) or sum(self.column_types.values()) <= 0:
                raise ConfigError(
                    f"synth.column_types: expected weights >= 0 with a positive sum, found {self.column_types}"
                )
        bad = sorted(set(self.label_sources) - set(_LABEL_SOURCES))
        if not self.label_sources or bad:
            raise ConfigError(
                f"synth.label_sources: expected some of {list(_LABEL_SOURCES)}, found {list(self.label_sources)}"
            )
        if self.max_word_len < 0:
            raise ConfigError(f"synth.max_word_len: expected >= 0 (0: no limit), found {self.max_word_len}")
        if not self.number_magnitudes or any(m < 1 for m in self.number_magnitudes):
            raise ConfigError(
                f"synth.number_magnitudes: expected positive integers, found {list(self.number_magnitudes)}"
            )


def normalise_text(text: str) -> str:
    """Collapse whitespace runs (newlines included) to one space and strip the ends."""
    return _WS.sub(" ", text).strip()


def has_cjk(text: str) -> bool:
    """True when `text` holds a CJK ideograph."""
    return _CJK.search(text) is not None


# ---------------------------------------------------------------------------------------------
# Word pools (faker, generated once per seed) and hand-written vocabularies
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pools:
    """Pre-generated text of one language."""

    words: tuple[str, ...]
    phrases: tuple[str, ...]
    names: tuple[str, ...]
    companies: tuple[str, ...]
    cities: tuple[str, ...]
    jobs: tuple[str, ...]
    sentences: tuple[str, ...]


@functools.lru_cache(maxsize=8)
def make_pools(lang: str, seed: int, size: int) -> Pools:
    """Faker text pools for `lang` ('en' | 'zh'); cached because faker is slow to call."""
    from faker import Faker  # imported here: faker takes ~0.5 s to import

    fake = Faker("zh_CN" if lang == "zh" else "en_US")
    fake.seed_instance(seed)

    def pool(make) -> tuple[str, ...]:
        items = dict.fromkeys(normalise_text(make()) for _ in range(size))
        return tuple(s for s in items if s)

    if lang == "zh":
        phrase = lambda: fake.word() + fake.word()  # noqa: E731
        sentence = lambda: fake.sentence(nb_words=fake.random_int(4, 14)).rstrip("。") + "。"  # noqa: E731
    else:
        phrase = lambda: fake.catch_phrase() if fake.random_int(0, 1) else fake.bs().capitalize()  # noqa: E731
        sentence = lambda: fake.sentence(nb_words=fake.random_int(6, 18))  # noqa: E731
    return Pools(
        words=pool(fake.word),
        phrases=pool(phrase),
        names=pool(fake.name),
        companies=pool(fake.company),
        cities=pool(fake.city),
        jobs=pool(fake.job),
        sentences=pool(sentence),
    )


COLUMN_TYPES = ("label", "int", "decimal", "money", "percent", "date", "code", "text", "name",
                "company", "city", "status", "year")  # fmt: skip
_TYPE_WEIGHTS = {"label": 3, "int": 5, "decimal": 5, "money": 4, "percent": 4, "date": 2, "code": 1.5,
                 "text": 0, "name": 1.5, "company": 1, "city": 1, "status": 1.5, "year": 1}  # fmt: skip
_NUMERIC = {"int", "decimal", "money", "percent", "year"}
_LABEL_SOURCES = ("words", "phrases", "cities", "jobs", "companies")

HEADERS = {
    "en": {
        "label": ["Item", "Category", "Region", "Product", "Department", "Project", "Segment", "Indicator"],
        "int": ["Count", "Quantity", "Units", "Total", "No. of staff", "Orders", "Visits", "Rank"],
        "decimal": ["Value", "Ratio", "Mean", "Std. dev.", "Weight (kg)", "Length (m)", "Score", "Index"],
        "money": ["Revenue", "Cost", "Price", "Amount", "Budget", "Net income", "Balance", "Salary"],
        "percent": ["Growth", "Share", "Rate", "Margin", "Change", "YoY", "Accuracy"],
        "date": ["Date", "Start date", "Due", "Updated", "Issued", "Deadline"],
        "code": ["ID", "Code", "SKU", "Ref.", "Order no.", "Serial"],
        "text": ["Notes", "Remarks", "Description", "Comment", "Details"],
        "name": ["Name", "Manager", "Contact", "Owner", "Author"],
        "company": ["Company", "Supplier", "Customer", "Vendor", "Partner"],
        "city": ["City", "Location", "Branch", "Office"],
        "status": ["Status", "Level", "Type", "Grade"],
        "year": ["Year", "FY", "Period"],
    },
    "zh": {
        "label": ["项目", "名称", "类别", "地区", "产品", "部门", "指标", "分类"],
        "int": ["数量", "人数", "合计", "订单数", "次数", "排名", "件数"],
        "decimal": ["数值", "比值", "均值", "标准差", "重量(kg)", "长度(m)", "得分", "指数"],
        "money": ["营业收入", "成本", "单价", "金额", "预算", "净利润", "余额", "工资(元)"],
        "percent": ["增长率", "占比", "比率", "毛利率", "同比", "完成率"],
        "date": ["日期", "开始日期", "截止日期", "更新时间", "签订日期"],
        "code": ["编号", "代码", "单号", "序列号", "证书编号"],
        "text": ["备注", "说明", "描述", "摘要", "详情"],
        "name": ["姓名", "负责人", "联系人", "经办人"],
        "company": ["公司", "供应商", "客户", "单位名称"],
        "city": ["城市", "所在地", "分公司"],
        "status": ["状态", "等级", "类型", "审核结果"],
        "year": ["年份", "年度", "期间"],
    },
}
GROUP_LABELS = {
    "en": ["2021", "2022", "2023", "2024", "Q1", "Q2", "Q3", "Q4", "Actual", "Budget", "Male", "Female",
           "Domestic", "International", "Current period", "Prior period", "Before", "After", "Group A",
           "Group B", "Baseline", "Ours"],
    "zh": ["2021年", "2022年", "2023年", "2024年", "第一季度", "第二季度", "上半年", "下半年", "实际", "预算",
           "男", "女", "国内", "国外", "本期", "上期", "调整前", "调整后", "甲组", "乙组", "城镇", "农村"],
}  # fmt: skip
STATUS = {
    "en": [
        "Active",
        "Pending",
        "Closed",
        "Yes",
        "No",
        "High",
        "Medium",
        "Low",
        "Approved",
        "Rejected",
        "N/A",
    ],
    "zh": ["是", "否", "已完成", "进行中", "未开始", "高", "中", "低", "合格", "不合格", "通过", "—"],
}
TOTAL = {"en": ["Total", "Sum", "Average", "Overall"], "zh": ["合计", "总计", "平均", "小计"]}
SECTION = {"en": ["Part", "Section", "Panel", "Group"], "zh": ["一、", "二、", "三、", "（一）", "（二）"]}
UNITS = {
    "en": ["(USD)", "(%)", "(n)", "(m)", "(kg)", "(000s)"],
    "zh": ["单位", "(千元)", "(万元)", "(%)", "(人)"],
}
# Document content (SynthConfig.unit_rate and friends).
HEADER_UNITS = {
    "en": {
        "money": ["(USD million)", "($ thousands)", "(€ m)", "(RMB)", "(USD)"],
        "percent": ["(%)", "(% of total)"],
        "int": ["(n)", "(thousands)", "(persons)", "('000)"],
        "decimal": ["(kg)", "(m2)", "(μg/m3)", "(kg/m3)", "(cm-1)", "(mm)", "(ms)", "(°C)", "(s)"],
    },
    "zh": {
        "money": ["（万元）", "（元）", "（亿元）", "（千元）", "(万元)"],
        "percent": ["（%）", "(%)"],
        "int": ["（人）", "（个）", "（家）", "（次）"],
        "decimal": ["（吨）", "（m2）", "（公里）", "（μg/m3）", "（℃）", "（千克）"],
    },
}
LONG_HEADERS = {
    "en": ["Net income attributable to shareholders of the parent", "Average number of employees during the year",
           "Share of respondents who agreed", "Change compared with the previous year", "PM2.5 concentration",
           "Total operating revenue of the segment", "Number of households surveyed", "CO2 emissions per capita",
           "Cash flow from operating activities"],
    "zh": ["归属于母公司所有者的净利润", "经营活动产生的现金流量净额", "本年累计完成投资额", "较上年同期增减变动比例",
           "期末在职员工的数量合计", "扣除非经常性损益后的净利润", "PM2.5年均浓度", "营业收入比上年同期增减"],
}  # fmt: skip
NOTE_MARKS = ["*", "**", "***", "†", "‡"]  # after any text
NOTE_LETTERS = ["a", "b", "c", "d"]  # after numbers only (a letter after a word is not a mark)
CHILD_PREFIX = {"en": ["Of which: ", "of which ", "- "], "zh": ["其中：", "其中: ", "减："]}
_NUMBER_CELL = re.compile(r"^-?\(?[-+$€£¥￥]?[\d,]*\d(\.\d+)?\)?$")
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


# ---------------------------------------------------------------------------------------------
# Column content
# ---------------------------------------------------------------------------------------------
@dataclass
class Column:
    """One column's type and the format every cell of it shares."""

    kind: str
    fmt: dict = field(default_factory=dict)


def _short(items: Sequence[str], limit: int) -> Sequence[str]:
    """The items at most `limit` characters long (all when limit is 0; the shortest when none)."""
    if not limit:
        return items
    return [x for x in items if len(x) <= limit] or [min(items, key=len)]


def _plan_column(rng: random.Random, kind: str, lang: str, cfg: SynthConfig) -> Column:
    """Fix the per-column format so all cells of a column look alike (aligned numeric columns)."""
    fmt: dict = {}
    if kind in ("int", "decimal", "money"):
        fmt["mag"] = rng.choice(cfg.number_magnitudes)
        fmt["decimals"] = {"int": 0, "decimal": rng.choice([1, 2, 2, 3, 4]), "money": rng.choice([0, 2, 2])}[
            kind
        ]
        fmt["thousands"] = rng.random() < 0.6
        fmt["neg"] = rng.random() < 0.3  # some negatives in this column
        fmt["paren_neg"] = rng.random() < 0.3
    if kind == "money":
        fmt["unit"] = rng.choice(["¥", "￥", "元", ""] if lang == "zh" else ["$", "€", "£", " USD", ""])
    if kind == "percent":
        fmt["decimals"] = rng.choice([0, 1, 1, 2])
        fmt["sign"] = rng.random() < 0.3
        fmt["symbol"] = rng.random() < 0.8
    if kind == "date":
        fmts = ["%Y-%m-%d", "%m/%d/%Y", "%d %b %Y", "%b %d, %Y", "%Y/%-m/%-d", "%Y.%m"]
        fmt["date"] = rng.choice(fmts + (["%Y年%-m月%-d日", "%Y年%-m月"] * 2 if lang == "zh" else []))
    if kind == "code":
        letters = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(rng.randint(1, 3)))
        fmt["prefix"] = letters + rng.choice(["-", "", "/", "-", "_"])
        fmt["digits"] = rng.randint(3, 6)
    if kind == "status":
        values = _short(STATUS[lang], cfg.max_word_len)
        fmt["values"] = rng.sample(values, min(len(values), rng.randint(2, 4)))
    if kind == "label":
        fmt["source"] = rng.choice(cfg.label_sources)
    return Column(kind, fmt)


def _number(rng: random.Random, fmt: dict, prefix: str = "", suffix: str = "") -> str:
    """A number in the column's format; the currency unit sits inside the sign: -$5, ($5)."""
    value = rng.random() * fmt["mag"] * rng.choice([0.1, 0.5, 1.0, 1.0])
    body = f"{value:,.{fmt['decimals']}f}" if fmt["thousands"] else f"{value:.{fmt['decimals']}f}"
    body = prefix + body + suffix
    if fmt["neg"] and rng.random() < 0.25:
        body = f"({body})" if fmt["paren_neg"] else "-" + body
    return body


def _date(rng: random.Random, fmt: str) -> str:
    y, m, d = rng.randint(1998, 2025), rng.randint(1, 12), rng.randint(1, 28)
    out = fmt.replace("%Y", str(y)).replace("%-m", str(m)).replace("%-d", str(d))
    return out.replace("%m", f"{m:02d}").replace("%d", f"{d:02d}").replace("%b", _MONTHS[m - 1])


def _value(rng: random.Random, col: Column, pools: Pools, lang: str) -> str:
    """One body cell of column `col`."""
    k, f = col.kind, col.fmt
    if k in ("int", "decimal"):
        return _number(rng, f)
    if k == "money":
        unit = f["unit"]
        return _number(rng, f, unit, "") if unit in ("$", "€", "£", "¥", "￥") else _number(rng, f, "", unit)
    if k == "percent":
        v = rng.uniform(-30, 100) if f["sign"] else rng.uniform(0, 100)
        s = f"{v:+.{f['decimals']}f}" if f["sign"] else f"{v:.{f['decimals']}f}"
        return s + ("%" if f["symbol"] else "")
    if k == "year":
        return str(rng.randint(1990, 2025))
    if k == "date":
        return _date(rng, f["date"])
    if k == "code":
        return f["prefix"] + str(rng.randint(1, 10 ** f["digits"] - 1)).zfill(f["digits"])
    if k == "status":
        return rng.choice(f["values"])
    if k == "text":
        return rng.choice(pools.sentences)
    if k == "name":
        return rng.choice(pools.names)
    if k == "company":
        return rng.choice(pools.companies)
    if k == "city":
        return rng.choice(pools.cities)
    source = getattr(pools, f.get("source", "words"))
    text = rng.choice(source)
    return text[:1].upper() + text[1:] if lang == "en" else text


def _escape_variant(rng: random.Random, text: str, numeric: bool) -> str:
    """Put an HTML-escapable character into `text` the way real tables do (R&D, < 0.01)."""
    if numeric:
        return rng.choice(["<", ">", "< ", "> ", "<=", ">="]) + text
    return rng.choice([f"{text} & Co.", f"R&D {text}", f"{text} (<{rng.randint(1, 99)})", f"{text} > 5"])


# ---------------------------------------------------------------------------------------------
# Layout: header rows and spans
# ---------------------------------------------------------------------------------------------
def _draw_size(rng: random.Random, lo: int, hi: int) -> int:
    """Sizes skewed small (real tables are mostly short), but the whole range occurs."""
    return min(hi, max(lo, round(rng.triangular(lo, hi, lo + (hi - lo) * 0.2))))


def _header_cells(
    rng: random.Random, names: list[str], h: int, spans: bool, lang: str, first_label: bool
) -> list[Cell]:
    """Header rows 0..h-1 over len(names) columns. With spans, upper rows group adjacent columns
    (colspan) and lone columns reach down (rowspan, never past row h-1)."""
    n = len(names)
    cells: list[Cell] = []
    if not spans or h == 1:
        for r in range(h):
            for c in range(n):
                if r == h - 1:
                    text = names[c]
                elif r == 0:
                    text = rng.choice(GROUP_LABELS[lang])
                else:
                    text = rng.choice(UNITS[lang])
                cells.append(Cell(text, r, c))
        return cells

    def fill(r: int, lo: int, hi: int) -> None:
        """Cover rows r..h-1 of columns lo..hi-1."""
        if r == h - 1:
            cells.extend(Cell(names[c], r, c) for c in range(lo, hi))
            return
        c = lo
        while c < hi:
            width = min(hi - c, rng.choice([1, 1, 2, 2, 3, 4]))
            if width == 1:
                cells.append(Cell(names[c], r, c, rowspan=h - r))
            else:
                cells.append(Cell(rng.choice(GROUP_LABELS[lang]), r, c, colspan=width))
                fill(r + 1, c, c + width)
            c += width

    start = 0
    if first_label:  # the row-label column's header reaches down through every header row
        cells.append(Cell(names[0], 0, 0, rowspan=h))
        start = 1
    fill(0, start, n)
    return cells


@functools.lru_cache(maxsize=8)
def _short_pools(lang: str, seed: int, size: int, limit: int) -> Pools:
    full = make_pools(lang, seed, size)
    return Pools(**{f.name: tuple(_short(getattr(full, f.name), limit)) for f in dataclasses.fields(Pools)})


def _pools(lang: str, cfg: SynthConfig) -> Pools:
    """The text pools of `lang`, cut to `cfg.max_word_len` when that is set."""
    if not cfg.max_word_len:
        return make_pools(lang, cfg.pool_seed, cfg.pool_size)
    return _short_pools(lang, cfg.pool_seed, cfg.pool_size, cfg.max_word_len)


def synthesize(rng: random.Random, cfg: SynthConfig) -> Table:
    """A random, valid table grid drawn with `rng` under the controls of `cfg`."""
    lang = "zh" if rng.random() < cfg.zh_rate else "en"
    pools = _pools(lang, cfg)
    mixed = lang == "zh" and rng.random() < cfg.mix_rate
    en_pools = _pools("en", cfg) if mixed else pools

    n_rows = _draw_size(rng, *cfg.rows)
    n_cols = _draw_size(rng, *cfg.cols)
    if n_rows == 1 or rng.random() < cfg.no_header_rate or cfg.header_rows[1] == 0:
        h = 0
    else:
        h = cfg.header_rows[0]
        while h < cfg.header_rows[1] and rng.random() < 0.3:
            h += 1
        h = max(1, min(h, n_rows - 1))  # keep at least one body row
    spans = rng.random() < cfg.span_rate
    blanks = rng.random() < cfg.blank_rate
    escapes = rng.random() < cfg.escape_rate

    # Column types: row labels first (often), then weighted picks; one long-text column sometimes.
    type_weights = cfg.column_types or _TYPE_WEIGHTS
    kinds = list(type_weights)
    weights = list(type_weights.values())
    first_label = rng.random() < cfg.row_label_rate
    col_kinds = [rng.choices(kinds, weights)[0] for _ in range(n_cols)]
    if first_label:
        label_kinds = [
            k for k in ("label", "label", "name", "company", "city", "year", "date") if type_weights.get(k)
        ]
        col_kinds[0] = rng.choice(label_kinds) if label_kinds else col_kinds[0]
    if n_cols > 1 and rng.random() < cfg.long_text_rate:
        col_kinds[rng.randrange(1, n_cols) if n_cols > 2 else n_cols - 1] = "text"
    columns = [_plan_column(rng, k, lang, cfg) for k in col_kinds]
    col_pools = [en_pools if mixed and rng.random() < 0.4 else pools for _ in columns]

    names = []
    for col in columns:
        name = rng.choice(_short(HEADERS[lang][col.kind], cfg.max_word_len))
        if mixed and rng.random() < 0.3:
            name = rng.choice(_short(HEADERS["en"][col.kind], cfg.max_word_len))
        names.append(name)

    cells = _header_cells(rng, names, h, spans, lang, first_label and n_cols > 1) if h else []
    body = n_rows - h
    taken = [[False] * n_cols for _ in range(body)]  # body slots already covered

    def place(text: str, r: int, c: int, rs: int = 1, cs: int = 1) -> None:
        for rr in range(r, r + rs):
            for cc in range(c, c + cs):
                taken[rr][cc] = True
        cells.append(Cell(text, h + r, c, rs, cs))

    def free(r: int, c: int, rs: int, cs: int) -> bool:
        return all(not taken[rr][cc] for rr in range(r, r + rs) for cc in range(c, c + cs))

    if spans and n_cols > 1 and body > 3:
        # Full-width section rows ("Part A", "一、...") split the body into groups.
        if rng.random() < 0.35:
            for r in sorted(rng.sample(range(body - 1), rng.randint(1, min(3, body // 4 + 1)))):
                label = rng.choice(SECTION[lang])
                text = f"{label} {rng.choice('ABCDEF')}" if lang == "en" else label + rng.choice(pools.words)
                place(text, r, 0, 1, n_cols)
        # Row-label groups: the first column merges over runs of rows (a category per run).
        if first_label and n_cols > 2 and rng.random() < 0.5:
            r = 0
            while r < body:
                run = 1
                limit = rng.randint(1, 5)
                while run < limit and r + run < body and not taken[r + run][0]:
                    run += 1
                if not taken[r][0]:
                    place(_value(rng, columns[0], col_pools[0], lang), r, 0, run, 1)
                r += run
    if spans and body > 1:
        # A few merged blocks anywhere in the body.
        for _ in range(rng.randint(0, 3)):
            rs, cs = rng.randint(1, 3), rng.randint(1, 3)
            if rs * cs == 1 or rs > body or cs > n_cols:
                continue
            r, c = rng.randrange(body - rs + 1), rng.randrange(n_cols - cs + 1)
            if free(r, c, rs, cs):
                place(_value(rng, columns[c], col_pools[c], lang), r, c, rs, cs)

    total_row = first_label and body > 4 and columns[0].kind == "label" and rng.random() < 0.3
    for r in range(body):
        for c in range(n_cols):
            if taken[r][c]:
                continue
            if total_row and r == body - 1 and c == 0:
                text = rng.choice(TOTAL[lang])
            elif blanks and rng.random() < cfg.blank_cell_rate:
                text = ""
            else:
                text = _value(rng, columns[c], col_pools[c], lang)
                if escapes and rng.random() < 0.15:
                    text = _escape_variant(rng, text, columns[c].kind in _NUMERIC)
            place(text, r, c)
    if blanks and h and first_label and rng.random() < 0.3:
        # The empty top-left corner of many row-labelled tables.
        corner = next(cell for cell in cells if cell.row == 0 and cell.col == 0)
        corner.text = ""

    table = Table(n_rows=n_rows, n_cols=n_cols, cells=cells, header_rows=h)
    _document_content(rng, cfg, table, columns, lang, pools, first_label)
    for cell in cells:
        cell.text = normalise_text(cell.text)
    table.validate()
    return table


def _document_content(
    rng: random.Random,
    cfg: SynthConfig,
    table: Table,
    columns: list[Column],
    lang: str,
    pools: Pools,
    first_label: bool,
) -> None:
    """Units, long headers, ± values, row-header groups and footnote marks, each drawn only when
    its rate is above 0 (the default stream draws nothing here, so its tables stay the same)."""
    h = table.header_rows
    # The bottom header cell of each single column: where a column's name (and unit) is.
    names = {c.col: c for c in table.cells if c.row < h and c.end_row == h and c.colspan == 1}
    numeric = [k for k, col in enumerate(columns) if col.kind in ("int", "decimal", "money", "percent")]
    if cfg.unit_rate and rng.random() < cfg.unit_rate:
        for k in numeric:
            if k in names and rng.random() < 0.6 and not re.search(r"[(（]", names[k].text):
                kind = "decimal" if columns[k].kind == "decimal" else columns[k].kind
                names[k].text += ("" if lang == "zh" else " ") + rng.choice(HEADER_UNITS[lang][kind])
    if cfg.long_header_rate and rng.random() < cfg.long_header_rate:
        for k in rng.sample(sorted(names), min(len(names), rng.randint(1, 2))):
            if k or not first_label:
                names[k].text = rng.choice(LONG_HEADERS[lang])
    body = [c for c in table.cells if c.row >= h]
    if cfg.pm_rate and rng.random() < cfg.pm_rate:
        for k, col in enumerate(columns):
            if col.kind == "decimal" and not col.fmt["thousands"] and rng.random() < 0.7:
                d = col.fmt["decimals"]
                for c in body:
                    if c.col == k and c.colspan == 1 and _NUMBER_CELL.match(c.text):
                        c.text += f" ± {rng.random() * col.fmt['mag'] * 0.1:.{d}f}"
    if cfg.hierarchy_rate and first_label and table.n_cols > 1 and rng.random() < cfg.hierarchy_rate:
        slots = table.slots()
        single = [
            r for r in range(h, table.n_rows)
            if all(s is not None and s.rowspan == s.colspan == 1 for s in slots[r])
        ]  # fmt: skip
        child = False
        for r in single:
            first = slots[r][0]
            if not child or rng.random() < 0.3:  # a heading row: a group name, blank values
                first.text = (
                    rng.choice(SECTION["zh"][:2]) + rng.choice(pools.words)
                    if lang == "zh" and rng.random() < 0.5
                    else _value(rng, columns[0], pools, lang) if columns[0].kind == "label"
                    else rng.choice(pools.phrases)
                )  # fmt: skip
                for s in slots[r][1:]:
                    s.text = ""
                child = True
            elif rng.random() < 0.25:
                first.text = rng.choice(CHILD_PREFIX[lang]) + first.text
    if cfg.footnote_rate and rng.random() < cfg.footnote_rate:
        marked = [c for c in table.cells if c.text]
        for c in rng.sample(marked, min(len(marked), rng.randint(1, 4))):
            if _NUMBER_CELL.match(c.text) and rng.random() < 0.5:
                c.text += rng.choice(NOTE_LETTERS)
            else:
                c.text += rng.choice(NOTE_MARKS)
