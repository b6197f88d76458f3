"""pyproject's pytest filterwarnings: gradio's pandas deprecations are hidden where they arise only.

gradio's queue analytics (gradio/queueing.py) call pandas in ways pandas 3 deprecates, so every
web UI test used to add two Pandas4Warnings to the summary. The filters name that module and
those messages; the same warnings from anywhere else (our code included) still show.
"""

from __future__ import annotations

import warnings

import pytest
from _pytest.config import parse_warning_filter

# gradio/queueing.py's two warnings under pandas 3.1, word for word
GRADIO_PANDAS = [
    "'future.no_silent_downcasting' is deprecated, please refrain from using it.",
    "The copy keyword is deprecated and will be removed in a future version. Copy-on-Write is active "
    "in pandas since 3.0 which utilizes a lazy copy mechanism that defers copies until necessary. "
    "Use .copy() to make an eager copy if necessary.",
]


def _shown(pytestconfig: pytest.Config, module: str) -> list[str]:
    """The messages of GRADIO_PANDAS that show when raised from `module` under pyproject's filters."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for entry in pytestconfig.getini("filterwarnings"):
            warnings.filterwarnings(*parse_warning_filter(entry, escape=False))
        for message in GRADIO_PANDAS:
            # pandas.errors.Pandas4Warning is a DeprecationWarning (its class is not named in
            # the filter: it does not exist before pandas 3)
            warnings.warn_explicit(message, DeprecationWarning, f"{module}.py", 176, module=module)
    return [str(w.message) for w in seen]


def test_gradios_pandas_warnings_are_filtered_in_gradio_queueing_only(pytestconfig: pytest.Config) -> None:
    assert _shown(pytestconfig, "gradio.queueing") == []
    assert _shown(pytestconfig, "tabvlm.serve.ui") == GRADIO_PANDAS
    assert _shown(pytestconfig, "gradio.queueing_other") == GRADIO_PANDAS


def test_the_filtered_messages_are_the_ones_pandas_raises() -> None:
    pd = pytest.importorskip("pandas")
    if not hasattr(pd.errors, "Pandas4Warning"):
        pytest.skip(f"pandas {pd.__version__} raises no Pandas4Warning")
    assert issubclass(pd.errors.Pandas4Warning, DeprecationWarning)
    with pytest.warns(pd.errors.Pandas4Warning) as seen:  # gradio/queueing.py's two calls
        with pd.option_context("future.no_silent_downcasting", True):
            pd.DataFrame([{"a": 1}]).fillna(value=0).infer_objects(copy=False)
    assert [str(w.message) for w in seen] == GRADIO_PANDAS
