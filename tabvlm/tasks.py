"""What a user turn asks for, as one registry: each task's prompt, its target writer (Table ->
the text a model is trained to emit), its output reader (the model's text -> Table) and whether
the HTML table grammar may constrain its decoding. The dataset, the recognizer, the HTTP API,
the web UI and eval all read `TASKS`; adding a task is one entry here (plus its tests).

The image always comes first in the user turn (`<image>\\n`, then the prompt).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tabvlm.errors import ConfigError
from tabvlm.tables.grid import Table
from tabvlm.tables.html import parse_html, to_html
from tabvlm.tables.otsl import parse_otsl, to_otsl
from tabvlm.tables.views import parse_markdown, to_markdown

IMAGE_PLACEHOLDER = "<image>"


@dataclass(frozen=True)
class Task:
    """One task. `write`/`read` are None for tasks whose answer is not a table (the recognizer
    then returns the model's text only); `grammar` says the HTML table grammar applies."""

    name: str
    prompt: str
    write: Callable[[Table], str] | None = None
    read: Callable[[str], Table] | None = None
    grammar: bool = False

    @property
    def is_table(self) -> bool:
        return self.read is not None


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("html", "Convert the table in the image to HTML.", to_html, parse_html, grammar=True),
        Task("otsl", "Convert the table in the image to OTSL.", to_otsl, parse_otsl),
        Task("markdown", "Convert the table in the image to Markdown.", to_markdown, parse_markdown),
        Task("formula", "Convert the formula in the image to LaTeX."),
        Task("chart", "Convert the chart in the image to a Markdown table."),
        Task("ocr", "Read all the text in the image."),
    )
}
TABLE_TASKS: tuple[str, ...] = tuple(name for name, t in TASKS.items() if t.is_table)
WRITABLE_TASKS: tuple[str, ...] = tuple(name for name, t in TASKS.items() if t.write is not None)


def get_task(name: str) -> Task:
    """The task called `name`; ConfigError naming the known ones otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def user_prompt(task: str = "html") -> str:
    """The user turn's content for `task`, image placeholder included."""
    return f"{IMAGE_PLACEHOLDER}\n{get_task(task).prompt}"


def task_of_prompt(content: str) -> str | None:
    """The task whose `user_prompt` is exactly `content` (a canonical record's user turn)."""
    return next((name for name in TASKS if user_prompt(name) == content.strip()), None)


def table_task_named_in(text: str) -> str:
    """The table task a free-text prompt (an OpenAI-style chat message) asks for: the first table
    task other than html whose name it mentions, else html."""
    lowered = text.lower()
    return next((name for name in TABLE_TASKS if name != "html" and name in lowered), "html")
