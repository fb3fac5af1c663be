"""The format core: grammar-driven parser, typed tree, validator, structural filter, stats."""

from .answer import extract_boxed, find_boxed
from .diagnostics import CODE_TABLE, Code, Diagnostic
from .filter import StructuralFilter, Verdict
from .parse import ParseResult, parse, parse_tree
from .stats import TreeStats, token_length, tree_stats
from .tree import Answer, Block, Guideline, Plan, Step, Takeaway, Text, Trajectory
from .validate import PROFILES, Profile, ProfileName, Validation, get_profile, validate, validate_tree

__all__ = [
    "CODE_TABLE",
    "PROFILES",
    "Answer",
    "Block",
    "Code",
    "Diagnostic",
    "Guideline",
    "ParseResult",
    "Plan",
    "Profile",
    "ProfileName",
    "Step",
    "StructuralFilter",
    "Takeaway",
    "Text",
    "Trajectory",
    "TreeStats",
    "Validation",
    "Verdict",
    "extract_boxed",
    "find_boxed",
    "get_profile",
    "parse",
    "parse_tree",
    "token_length",
    "tree_stats",
    "validate",
    "validate_tree",
]
