"""interlace: make vision-language models shallower by removing whole decoder layers and healing the rest."""

__version__ = "0.1.0"
