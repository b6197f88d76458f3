"""Tasks by prompt: what the user turn asks for. The image always comes first (`<image>\\n`)."""

from __future__ import annotations

from tabvlm.errors import ConfigError

IMAGE_PLACEHOLDER = "<image>"

TASK_PROMPTS: dict[str, str] = {
    "html": "Convert the table in the image to HTML.",
    "otsl": "Convert the table in the image to OTSL.",
    "markdown": "Convert the table in the image to Markdown.",
    "formula": "Convert the formula in the image to LaTeX.",
    "chart": "Convert the chart in the image to a Markdown table.",
    "ocr": "Read all the text in the image.",
}


def user_prompt(task: str = "html") -> str:
    """The user turn's content for `task`, image placeholder included."""
    if task not in TASK_PROMPTS:
        raise ConfigError(f"unknown task {task!r}; known: {', '.join(TASK_PROMPTS)}")
    return f"{IMAGE_PLACEHOLDER}\n{TASK_PROMPTS[task]}"
