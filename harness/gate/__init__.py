"""The release gate: policy, paired verdicts, CI artifacts, candidate comparison, noise calibration."""

from .policy import Policy, Rule, load_policy
from .rules import decide, evaluate_gate
from .run import run_gate
from .runs import RunSide, load_side
from .verdict import RuleResult, Verdict

__all__ = ["Policy", "Rule", "RuleResult", "RunSide", "Verdict", "decide", "evaluate_gate", "load_policy", "load_side", "run_gate"]
