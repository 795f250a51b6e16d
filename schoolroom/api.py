"""Everything a protocol author uses, from one module: ``from schoolroom.api import *`` or by name.

A protocol file declares its settings, its function and (when it needs them) its own roles, message types,
training kinds and engines; a config names the file (``[protocol] file = "hint.py"``) and runs it::

    from schoolroom.api import Classroom, Report, protocol

    class HintSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        problems: str = "eval"

    @protocol("hint", HintSettings)
    def hint(room: Classroom, cfg: HintSettings) -> Report: ...
"""

from schoolroom.agents.base import Agent, batched, effect, role
from schoolroom.agents.engines import Completion, Engine, Params, Prompt
from schoolroom.agents.engines.factory import engine
from schoolroom.agents.explorer import Explorer, Search, Unmeasured, dedupe_pairs
from schoolroom.agents.student import Student, solve_prompt
from schoolroom.agents.teacher import Teacher
from schoolroom.agents.trainer import Trainer, training_kind
from schoolroom.agents.verifier import Verifier, scorer
from schoolroom.classroom.loading import protocol
from schoolroom.classroom.pending import Pending
from schoolroom.classroom.room import Classroom
from schoolroom.config import Config
from schoolroom.environment import (answers_match, departs_from_gold, extract_answer, gold_rationale, solution_text,
                                    split_steps, to_number)
from schoolroom.environment.datasets import resolve_data_dir
from schoolroom.environment.prm800k import load_prm800k, rated_steps, split_by_problem
from schoolroom.environment.prompts import chat
from schoolroom.messages import (Attempt, EvalReport, Explanation, Guidance, Message, Mistake, Note, Plan, PreferencePair,
                                 Problem, Rationale, Reading, StepRewards, TokenScores, TrainRequest, TrainResult, Verdict,
                                 message)
from schoolroom.reporting.report import (Acc, Diff, Figure, Report, Series, Table, accuracy, compare, difference,
                                         training_table)
from schoolroom.reporting.stats import (AucCount, auc, auc_count, bootstrap_groups, first_below, fmt, fmt_acc, fmt_auc, fmt_diff,
                                       lowest, mean_interval, paired_difference, rank_auc, wilson)
from schoolroom.training.aggregate import AGGREGATIONS, aggregate, aggregation
from schoolroom.training.kinds import TRAINING_KINDS
from schoolroom.training.settings import (DPOConfig, DPOSettings, GRPOConfig, LoRAConfig, LoraSettings, OPDConfig, PPOConfig,
                                          ReflectionConfig, RewardModelConfig, Settings, SFTConfig)

__all__ = [
    # protocols
    "Classroom", "Pending", "Report", "Table", "Figure", "Series", "Acc", "Diff", "protocol", "compare", "accuracy",
    "difference", "training_table", "fmt", "fmt_acc", "fmt_diff", "paired_difference", "wilson",
    # messages
    "Message", "message", "Attempt", "EvalReport", "Guidance", "Mistake", "Note", "Plan", "PreferencePair", "Problem",
    "Rationale", "StepRewards", "TokenScores", "TrainRequest", "TrainResult", "Verdict", "Explanation", "Reading",
    # roles, engines, training kinds, scorers
    "Agent", "role", "batched", "effect", "Student", "Teacher", "Explorer", "Verifier", "Trainer", "engine",
    "Engine", "Completion", "Params", "Prompt", "training_kind", "scorer", "Settings", "DPOSettings", "LoraSettings",
    "Search", "Unmeasured",
    # training settings with their defaults
    "SFTConfig", "DPOConfig", "ReflectionConfig", "RewardModelConfig", "PPOConfig", "GRPOConfig", "OPDConfig", "LoRAConfig",
    # for a role's methods: prompts and answers
    "answers_match", "chat", "departs_from_gold", "extract_answer", "solve_prompt", "split_steps", "to_number",
    # problems and data
    "Config", "gold_rationale", "solution_text", "resolve_data_dir", "load_prm800k", "rated_steps", "split_by_problem",
    # statistics for reports
    "AucCount", "auc", "auc_count", "bootstrap_groups", "first_below", "fmt_auc", "lowest", "mean_interval",
    "rank_auc",
    # rewards and training kinds
    "AGGREGATIONS", "aggregate", "aggregation", "TRAINING_KINDS", "dedupe_pairs",
]
