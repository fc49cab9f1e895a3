"""The release gate: policy, paired verdicts, CI artifacts, candidate comparison, noise calibration."""

from .policy import Policy, Rule, load_policy
from .runs import RunSide, load_side
from .verdict import Verdict, evaluate_gate

__all__ = ["Policy", "Rule", "RunSide", "Verdict", "evaluate_gate", "load_policy", "load_side"]
