"""lost-and-found: what a LoRA adapter found, and what the model lost."""

__version__ = "0.1.0"
