"""Layer-selection methods: INTERLACE, its ablations and the baselines, each a ``Method`` record in
``METHODS`` that maps redundancy scores (and for some the model) to a ``Plan``."""

from interlace.methods.interlace import interlace_select
from interlace.methods.plan import Group, Plan, SelectionError, check_budget, drop_budget
from interlace.methods.registry import METHODS, Method, budget_problems, get_method, required_ks, select_layers

__all__ = [
    "METHODS",
    "Group",
    "Method",
    "Plan",
    "SelectionError",
    "budget_problems",
    "check_budget",
    "drop_budget",
    "get_method",
    "interlace_select",
    "required_ks",
    "select_layers",
]
