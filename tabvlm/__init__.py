"""tabvlm: a small, fast vision-language model that turns a picture of a table into clean HTML."""

__version__ = "0.1.0"
