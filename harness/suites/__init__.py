"""Suites: what is measured. The suite spec and its discovery, the data sources, the sandboxed templates, and
the suite types (lm-eval, perplexity, freeform, the hallucination, bias and preference probes).
:mod:`harness.evaluate` is the engine that runs them."""
