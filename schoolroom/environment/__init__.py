"""The classroom's world: problems (datasets and synthetic), answer checking and step splitting."""

from schoolroom.environment.answers import (
    answers_match, departs_from_gold, extract_answer, gold_rationale, numbers, solution_text, split_steps, to_number,
)
from schoolroom.environment.datasets import DATASETS, DatasetNotFound, load
from schoolroom.environment.synthetic import synthetic

__all__ = ["DATASETS", "DatasetNotFound", "answers_match", "departs_from_gold", "extract_answer", "gold_rationale", "load", "numbers", "solution_text", "split_steps", "synthetic",
           "to_number"]
