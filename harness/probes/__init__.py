"""Hallucination and bias probes: suite types listed in :mod:`harness.evaluate.suite_types`, imported on first use."""
