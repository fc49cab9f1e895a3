"""Instruction data: reading every accepted format, prompt templates, curation."""

from .formats import SCHEMAS, Example, Problem, ReadResult, read_examples

__all__ = ["SCHEMAS", "Example", "Problem", "ReadResult", "read_examples"]
