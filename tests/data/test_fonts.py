"""Font discovery: custom folders, classification, glyph coverage, the missing-CJK error."""

from __future__ import annotations

import shutil

import pytest

from tabvlm.data.fonts import COMMON_CJK, ENV_VAR, discover_fonts, draws_text, font_search_path, load_font
from tabvlm.errors import DataError


@pytest.fixture(scope="module")
def system():
    return discover_fonts(need_cjk=True)


def test_system_fonts_are_classified(system):
    kinds = {f.kind for f in system.faces}
    assert {"latin-serif", "latin-sans", "latin-mono", "cjk"} <= kinds
    assert len(system.of_kind("cjk")) >= 2
    by_file = {f.path.rsplit("/", 1)[-1]: f for f in system.faces}
    assert by_file["DejaVuSansMono.ttf"].kind == "latin-mono"
    assert by_file["LiberationSerif-Regular.ttf"].kind == "latin-serif"
    assert by_file["DejaVuSans.ttf"].bold_path.endswith("DejaVuSans-Bold.ttf")
    assert by_file["NotoSansCJK-Regular.ttc"].family == "Noto Sans CJK SC"  # the Simplified face


def test_cjk_faces_really_draw_chinese_and_latin_ones_do_not(system):
    for face in system.of_kind("cjk"):
        assert draws_text(face, COMMON_CJK)
    for face in system.of_kind("latin-sans"):
        assert draws_text(face, "Revenue 12.5%")
        assert not draws_text(face, "中文"), f"{face.family} would draw tofu boxes"


def test_discovery_from_a_custom_folder_via_env(system, tmp_path, monkeypatch):
    src = [f for f in system.faces if f.family == "DejaVu Serif"][0].path
    shutil.copy(src, tmp_path / "MySerif.ttf")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert font_search_path(use_system=False) == [tmp_path]
    fonts = discover_fonts(use_system=False)
    assert [(f.family, f.kind) for f in fonts.faces] == [("DejaVu Serif", "latin-serif")]
    assert fonts.faces[0].path == str(tmp_path / "MySerif.ttf")


def test_missing_cjk_font_is_a_clear_error(system, tmp_path, monkeypatch):
    src = [f for f in system.faces if f.family == "DejaVu Sans"][0].path
    shutil.copy(src, tmp_path / "Sans.ttf")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert not discover_fonts(use_system=False).has_cjk  # fine when no Chinese is asked for
    with pytest.raises(DataError) as err:
        discover_fonts(use_system=False, need_cjk=True)
    msg = str(err.value)
    assert str(tmp_path) in msg and ENV_VAR in msg and "fonts-noto-cjk" in msg


def test_no_fonts_at_all_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no usable font"):
        discover_fonts([str(tmp_path)], use_system=False)


def test_loaded_fonts_are_cached(system):
    face = system.faces[0]
    assert load_font(face.path, face.index, 17) is load_font(face.path, face.index, 17)
    assert system.glyphs(face, 17).width("abc") == pytest.approx(
        load_font(face.path, face.index, 17).getlength("abc"), abs=1.5
    )
