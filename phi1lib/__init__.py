"""phi1lib: every stage of the phi-1 recipe ("Textbooks Are All You Need"), for real.

One subpackage per stage, in the book's order (filtering, synthesis, decontam, training,
evaluation), on shared services (budget, llm, sandbox) and a few small modules; the pipeline
is the only place that knows every stage. See CONTRIBUTING.md for who imports whom.
"""

__version__ = "0.1.0"
