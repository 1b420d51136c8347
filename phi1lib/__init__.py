"""phi1lib: every stage of the phi-1 recipe ("Textbooks Are All You Need"), for real.

Stages import `llm`, `costs`, `corpus`; the CLI and the notebooks import stages.
Nothing imports `cli` or the widget view. Heavy dependencies (torch, transformers)
are imported inside the modules that need them, so `phi1 budget` starts fast.
"""

__version__ = "0.1.0"
