"""The one vocabulary every layer speaks.

Every message is a frozen, tagged ``msgspec.Struct``. The common envelope (id, run id,
round, sender, recipient, time, parents) comes from :class:`Message`; ``parents`` holds the
ids of the messages this one answers, so a log is a causal graph. ``@message`` declares a type
(the built-in ones here, a protocol's own in its file); the log writes one message per JSON line
and decodes every declared type (``log.decode``).
"""

from __future__ import annotations

import time
from typing import Any, TypeVar, Union

import msgspec

from schoolroom.ids import new_id, sequential_ids  # noqa: F401  (sequential_ids: re-exported for protocols)
from schoolroom.registry import Registry

SCHEMA_VERSION = 1

Scalar = Union[int, float, str, bool, None]


M = TypeVar("M", bound="Message")


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Envelope shared by every message. Subclasses add the payload."""

    id: str = msgspec.field(default_factory=new_id)
    run_id: str = ""
    round: int = 0
    sender: str = ""
    recipient: str = ""
    time: float = msgspec.field(default_factory=time.time)
    parents: tuple[str, ...] = ()

    def reply(self, cls: type[M], **fields: Any) -> M:
        """A message of type ``cls`` answering this one: same run and round, parent = self."""
        fields.setdefault("run_id", self.run_id)
        fields.setdefault("round", self.round)
        fields.setdefault("recipient", self.sender)
        fields.setdefault("parents", (self.id,))
        return cls(**fields)


class Problem(Message, frozen=True, kw_only=True, tag="problem"):
    problem_id: str
    dataset: str
    question: str
    gold_steps: tuple[str, ...] = ()
    answer: str = ""
    meta: dict[str, Scalar] = {}


class Attempt(Message, frozen=True, kw_only=True, tag="attempt"):
    """A student's solution: the text it wrote after ``prefix`` (guidance it was given)."""

    problem_id: str
    text: str
    steps: tuple[str, ...] = ()
    answer: str | None = None
    prefix: str = ""
    model: str = ""
    adapter: str | None = None
    sample: int = 0
    tokens: int = 0
    # the completion as sampled, for RL: its token ids (with the stop token when it stopped on one) and each one's
    # sampling log-probability (4 decimals); None where the engine gives none (openai, reference)
    token_ids: tuple[int, ...] | None = None
    logprobs: tuple[float, ...] | None = None


class Verdict(Message, frozen=True, kw_only=True, tag="verdict"):
    """A grade of an Attempt (or of a Rationale: ``attempt_id`` names whichever was judged)."""

    problem_id: str
    attempt_id: str
    correct: bool
    predicted: str | None = None
    gold: str = ""
    reason: str = ""


class Mistake(Message, frozen=True, kw_only=True, tag="mistake"):
    """A wrong attempt, as a teacher is shown it (where it first goes wrong is the Explorer's StepRewards)."""

    problem_id: str
    attempt_id: str
    text: str
    predicted: str | None = None
    gold: str = ""


class Guidance(Message, frozen=True, kw_only=True, tag="guidance"):
    """What a teacher gives a student: the first ``k`` steps, a plan or a hint. ``answer``: the final answer of the
    whole solution the teacher wrote to take its steps from (None when it wrote only the steps): how strong it is."""

    problem_id: str
    kind: str = "first_steps"
    k: int = 0
    steps: tuple[str, ...] = ()
    text: str = ""
    teacher: str = ""
    answer: str | None = None


class Rationale(Message, frozen=True, kw_only=True, tag="rationale"):
    """A worked solution written for training (tailored, enriched, gold)."""

    problem_id: str
    text: str
    steps: tuple[str, ...] = ()
    answer: str | None = None
    source: str = ""
    mistake_id: str | None = None


class Plan(Message, frozen=True, kw_only=True, tag="plan"):
    problem_id: str
    text: str
    steps: tuple[str, ...] = ()


class StepRewards(Message, frozen=True, kw_only=True, tag="step_rewards"):
    """Scores of an attempt, per step and/or as a whole, and who wrote them (``source``).

    - ``rollouts`` (the Explorer, Monte-Carlo): ``rewards[i]`` is the fraction of rollouts from the prefix ending
      with step ``i`` (0-based) that reach the gold answer; None where nothing was measured (where the search did
      not look, and the last step unless ``unmeasured = "rollout"`` rolled out from the whole attempt too, as the
      Self-Explore authors do). ``start``: the same from the
      question alone, when measured; ``first_pit``: the first step from which no rollout is correct (or, by the
      ``unmeasured = "last_step"`` setting, the last step when none failed: a deduction).
    - ``prm`` (a process reward model): ``rewards[i]`` is the model's probability that the solution is still
      correct after step ``i``.
    - ``orm`` (an outcome reward model): ``score`` is its probability that the whole attempt is correct.
    - ``answer`` (the answer check): ``score`` is 1.0 for the gold answer, else 0.0.
    - ``human`` (labels such as PRM800K's): ``rewards[i]`` is the label of step ``i``, None where unlabelled.
    ``adapter`` names the reward model's version where a model wrote them.
    """

    problem_id: str
    attempt_id: str
    rewards: tuple[float | None, ...] = ()
    score: float | None = None
    source: str = "rollouts"
    adapter: str | None = None
    start: float | None = None
    first_pit: int | None = None
    rollouts: int = 0
    tokens: int = 0
    search: str = "linear"


class TokenScores(Message, frozen=True, kw_only=True, tag="token_scores"):
    """A model's log-probability of each token of an Attempt (``attempt_id``), exactly its ``token_ids``, under
    ``model`` with ``adapter``, seeing ``context`` before them: ``question`` (the student's own prompt) or
    ``solution`` (that and the gold solution: privileged information). On-policy distillation's teacher signal."""

    problem_id: str
    attempt_id: str
    logprobs: tuple[float, ...]
    model: str = ""
    adapter: str | None = None
    context: str = "question"


class Explanation(Message, frozen=True, kw_only=True, tag="explanation"):
    """A teacher's explanation of how to reach a problem's gold solution, written seeing the question and that
    solution (RLT's teacher): what a student reads before the solution. Sampled like an Attempt (its token ids and
    sampling log-probabilities), so the teacher can be trained on it by RL."""

    problem_id: str
    text: str
    model: str = ""
    adapter: str | None = None
    sample: int = 0
    tokens: int = 0
    token_ids: tuple[int, ...] | None = None
    logprobs: tuple[float, ...] | None = None


class Reading(Message, frozen=True, kw_only=True, tag="reading"):
    """A student's log-probability of each token of the gold solution after an Explanation (``explanation_id``;
    None: after the question alone, the untaught baseline), and of each token of that explanation seeing only
    the question (RLT's "is the explanation natural to the student" term), under ``model`` with ``adapter``."""

    problem_id: str
    explanation_id: str | None = None
    solution_logprobs: tuple[float, ...] = ()
    explanation_logprobs: tuple[float, ...] = ()
    model: str = ""
    adapter: str | None = None


class PreferencePair(Message, frozen=True, kw_only=True, tag="preference_pair"):
    """Chosen over rejected as continuations of ``prompt`` (the question) + ``prefix`` (steps already taken).

    Step level (Self-Explore): prefix = the steps before the first pit, rejected = the pit step,
    chosen = a correct completion from that prefix. Outcome level: no prefix, whole solutions.
    """

    problem_id: str
    prompt: str
    chosen: str
    rejected: str
    prefix: str = ""
    level: str = "step"
    step: int | None = None


class TrainRequest(Message, frozen=True, kw_only=True, tag="train_request"):
    """Train an adapter of kind ``kind`` (sft, dpo, reflection, orm, prm, ppo, grpo, ...) on the messages in ``data``.

    ``base_adapter`` continues an earlier adapter; ``reference_adapter`` is the policy RL keeps close to (None:
    the base model); ``base_model`` is the backbone to train on ("": the trainer's own model), e.g. a
    verifier's reward-model backbone.
    """

    kind: str
    data: tuple[str, ...] = ()
    base_adapter: str | None = None
    reference_adapter: str | None = None
    base_model: str = ""
    lora: dict[str, Any] = {}
    hyper: dict[str, Any] = {}
    seed: int = 0
    name: str = ""


class TrainResult(Message, frozen=True, kw_only=True, tag="train_result"):
    """The adapter a TrainRequest made. ``failed``: the training stopped (a NaN or exploding loss) and says why;
    ``adapter`` and ``path`` are then the adapter it started from ("" for the base model)."""

    request_id: str
    adapter: str
    path: str
    metrics: dict[str, float] = {}
    failed: str | None = None


class EvalReport(Message, frozen=True, kw_only=True, tag="eval_report"):
    """An accuracy the protocol reports, ``name`` its condition; ``verdicts`` the ids of the verdicts it counts
    (empty in logs older than this field)."""

    name: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    adapter: str | None = None
    metrics: dict[str, Any] = {}
    verdicts: tuple[str, ...] = ()


class Usage(Message, frozen=True, kw_only=True, tag="usage"):
    """Cost of one engine call: tokens in and out, latency, and money where known."""

    agent: str
    engine: str
    model: str = ""
    calls: int = 1
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost: float = 0.0
    errors: int = 0


class Note(Message, frozen=True, kw_only=True, tag="note"):
    """Something worth recording that is not an exchange: a skipped bad teacher output, a resume."""

    kind: str
    text: str
    problem_id: str | None = None
    data: dict[str, Any] = {}


class Call(Message, frozen=True, kw_only=True, tag="call"):
    """The runtime's record of one agent call: what it returned (message ids, or a plain value).

    ``key`` hashes the agent, method, round and arguments; a resumed run answers a call whose
    key is already logged from the log instead of asking the agent again.
    """

    agent: str
    method: str
    key: str
    outputs: tuple[str, ...] = ()
    shape: str = "list"  # list | one | value
    value: Any = None
    seconds: float = 0.0


class Header(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="header"):
    """First line of every log: the schema version and the run it belongs to."""

    schema: int = SCHEMA_VERSION
    run_id: str = ""
    created: float = msgspec.field(default_factory=time.time)
    producer: str = "schoolroom"


class Unknown(Message, frozen=True, kw_only=True, tag="unknown"):
    """A log record of a message type this process was not told about (a protocol's own type, its file not
    loaded): its envelope, its tag in ``record_type`` and every field in ``data``, kept rather than failing."""

    record_type: str = ""
    data: dict[str, Any] = {}


BUILTIN_TYPES: tuple[type[Message], ...] = (
    Problem, Attempt, Verdict, Mistake, Guidance, Rationale, Plan, StepRewards, TokenScores,
    Explanation, Reading, PreferencePair, TrainRequest, TrainResult, EvalReport, Usage, Note, Call,
)
MESSAGES: Registry[type[Message]] = Registry("message type")  # tag -> type: what the log reader decodes


def message(cls: type[M]) -> type[M]:
    """Declare a message type (a ``Message`` subclass with a ``tag``): the log decodes it from then on. Use it
    as a class decorator in a protocol's own file; the built-in types are declared the same way."""
    tag = cls.__struct_config__.tag if isinstance(cls, type) and issubclass(cls, Message) else None
    if not isinstance(tag, str) or tag in ("header", "unknown"):
        raise TypeError(f"{cls!r}: a message type is a Message subclass with a tag of its own (class X(Message, "
                        "frozen=True, kw_only=True, tag=\"x\"))")
    return MESSAGES.register(tag, cls)  # the same class again (a file loaded twice) replaces


for _cls in BUILTIN_TYPES:
    message(_cls)
MESSAGE_TYPES = BUILTIN_TYPES  # the built-in vocabulary

_encoder = msgspec.json.Encoder()


def encode(msg: Message | Header) -> bytes:
    return _encoder.encode(msg)


def to_builtins(msg: Message) -> dict[str, Any]:
    return msgspec.to_builtins(msg)
