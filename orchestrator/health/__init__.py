"""Health checks and automatic recovery (vtorc-like).

- `analysis`: a pure function from tablet records and their latest checks to a list of problems
- `checker`: the polling loop (`HealthChecker`), every instance runs it
- `recovery`: problems -> workflows, on the leader only, with anti-flapping
"""

from orchestrator.health.analysis import Problem, ProblemKind, TabletHealth, analyze
from orchestrator.health.checker import HealthChecker

__all__ = ["HealthChecker", "Problem", "ProblemKind", "TabletHealth", "analyze"]
