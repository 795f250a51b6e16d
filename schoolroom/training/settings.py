"""The settings of each training kind, typed, with their real defaults and a line on what each does (the way TRL
documents its configs). A config's table (``[protocol.sft]``, ``[protocol.ppo]``) decodes into one of these, so
a key no kind reads (``lr`` for ``learning_rate``) or a value of the wrong type is a config error naming the file
and the key before anything starts. A TrainRequest carries every setting (``asdict``), defaults filled in, so
the log says what each training used. ``schoolroom protocols NAME`` prints them with their defaults.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec


def doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class _Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    def asdict(self) -> dict[str, Any]:
        """Every setting, defaults filled in."""
        return msgspec.to_builtins(self)

    @classmethod
    def of(cls, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """``settings`` (a TrainRequest's ``hyper``: any subset of the keys) checked and with every default filled
        in, as a dict. A key this kind does not read raises ValueError naming it."""
        try:
            return msgspec.to_builtins(msgspec.convert(dict(settings or {}), cls))
        except msgspec.ValidationError as e:
            raise ValueError(f"{cls.__name__}: {e}") from None

    def merged(self, overrides: dict[str, Any]):
        """These settings with ``overrides`` (an arm's own) over them, checked."""
        return msgspec.convert(self.asdict() | overrides, type(self))


class SFTConfig(_Config, frozen=True):
    """Supervised fine-tuning on (prompt, completion) pairs, the loss on the completion; what every kind takes."""

    learning_rate: Annotated[float, doc("AdamW learning rate (linear decay to 0)")] = 5e-4
    epochs: Annotated[float, doc("passes over the examples (when max_steps is -1)")] = 1.0
    batch_size: Annotated[int, doc("examples per batch")] = 4
    grad_accum: Annotated[int, doc("batches per optimizer step")] = 1
    max_steps: Annotated[int, doc("optimizer steps; -1: as many as epochs take")] = -1
    max_length: Annotated[int, doc("tokens of prompt and completion kept per example")] = 512
    warmup_steps: Annotated[int, doc("steps of linear learning-rate warm-up")] = 0
    max_grad_norm: Annotated[float, doc("gradients are clipped to this norm")] = 1.0
    max_loss: Annotated[float, doc("a loss above it (or NaN, infinite) stops the training; the adapter it "
                                   "started from is kept")] = 1e4
    gradient_checkpointing: Annotated[bool | None, doc(
        "recompute activations in the backward pass instead of keeping them (memory for ~30% more time); "
        "None: on a GPU, off on a CPU")] = None


class DPOConfig(SFTConfig, frozen=True):
    """Direct preference optimization on (prompt, chosen, rejected) triples (TRL's DPOTrainer)."""

    beta: Annotated[float, doc("DPO's temperature: how far the policy may move from the reference")] = 0.1


class ReflectionConfig(SFTConfig, frozen=True):
    """Tailored learning's SFT plus self-reflection: a contrastive loss pulling the rationale's state toward
    another correct rationale and away from the wrong solution (``schoolroom.training.reflection``)."""

    reflection_weight: Annotated[float, doc("the reflection loss's weight (lambda); 0: plain SFT")] = 0.5
    margin: Annotated[float, doc("the contrastive margin (the authors' cl_p)")] = 1.0
    anchor: Annotated[Literal["rationale", "question"], doc(
        "the anchor state: the rationale (the authors' code) or the question prompt")] = "rationale"
    pool: Annotated[Literal["last", "mean"], doc(
        "a sequence's state: its last token's (the authors': EOS) or the mean over its tokens")] = "last"


class RewardModelConfig(SFTConfig, frozen=True):
    """An outcome (ORM) or process (PRM) reward model: the backbone with a scalar head, binary cross-entropy on
    the final answer's or each step's label (``schoolroom.training.reward_model``)."""

    labels: Annotated[Literal["hard", "soft"], doc(
        "PRM rollout labels: 1 if any rollout from the prefix reached the answer (hard), or the fraction (soft)")
    ] = "hard"
    separator: Annotated[str | None, doc("the token that marks a PRM step's end (None: the tokenizer's newline)")
                         ] = None
    batch_by: Annotated[Literal["example", "problem"], doc(
        "a batch is batch_size examples, or all the examples of batch_size problems")] = "example"
    head_dropout: Annotated[float, doc("dropout before the scalar head")] = 0.0
    forward_batch: Annotated[int, doc("sequences per forward pass when scoring")] = 16
    loss_check: Annotated[int, doc("examples whose loss is measured before and after training")] = 32


class RLConfig(SFTConfig, frozen=True):
    """What PPO and GRPO share: rollouts scored by a reward, trained on the sampled token ids."""

    learning_rate: Annotated[float, doc("AdamW learning rate (linear decay to 0)")] = 1e-5
    batch_size: Annotated[int, doc("rollouts per minibatch")] = 8
    temperature: Annotated[float, doc("the sampling temperature the rollouts were drawn at (log-probs use it)")
                           ] = 1.0
    clip: Annotated[float, doc("the policy ratio's clip range (epsilon)")] = 0.2
    aggregate: Annotated[str, doc("PRM step scores to one reward: min | max | avg | prod | last | a registered "
                                  "aggregation")] = "min"
    step_rewards: Annotated[bool, doc("PPO with a PRM: each step's score at the token that ends it")] = False
    empty_reward: Annotated[float, doc("the reward of a rollout with no completion")] = 0.0
    micro_tokens: Annotated[int, doc(
        "gradient accumulation: a minibatch is cut into micro-batches of at most this many padded tokens (rows "
        "sorted by length), their gradients summed to the minibatch's; 0: the minibatch in one pass")] = 8192
    logprob_chunk: Annotated[int, doc(
        "completion tokens whose vocabulary-wide log-softmax is computed at once (the chosen token's log-prob "
        "kept, the logits recomputed in the backward pass)")] = 1024
    share_prompts: Annotated[bool, doc(
        "rollouts of one prompt in one pass read the prompt once: one sequence, the prompt then each completion, "
        "each completion seeing the prompt and its own tokens (a tree attention mask); the same numbers as reading "
        "each rollout whole. In the forward-only passes, and in the updates with minibatches = groups. false: "
        "each rollout padded whole")] = True
    old_logprobs: Annotated[Literal["policy", "sampled"], doc(
        "what the update's ratio is against: policy: the log-probs recomputed under the adapter the training "
        "starts from (on-policy, where that adapter sampled the rollouts); sampled: the engine's sampling "
        "log-probs carried by the rollouts (one step off-policy: reinforce's overlap, where the adapter before "
        "sampled them); rollouts without them are refused")] = "policy"
    minibatches: Annotated[Literal["rollouts", "groups"], doc(
        "rollouts: each minibatch batch_size rollouts drawn at random (TRL's GRPOTrainer); groups: whole groups "
        "(the rollouts of one prompt) drawn at random, batch_size rollouts' worth per minibatch (verl; the GRPO "
        "paper's objective averages over questions), so an update reads each prompt once")] = "rollouts"


class PPOConfig(RLConfig, frozen=True):
    """PPO with a value head and GAE; the reward at the last token minus a KL penalty at every token."""

    epochs: Annotated[float, doc("passes over an iteration's rollouts")] = 4.0
    kl_coef: Annotated[float, doc("the per-token KL penalty's weight (KL to the reference policy)")] = 0.05
    clip_value: Annotated[float, doc("the value loss's clip range")] = 0.2
    vf_coef: Annotated[float, doc("the value loss's weight")] = 0.1
    gamma: Annotated[float, doc("the discount")] = 1.0
    lam: Annotated[float, doc("GAE's lambda")] = 0.95
    whiten: Annotated[bool, doc("advantages whitened per iteration")] = True


class GRPOConfig(RLConfig, frozen=True):
    """GRPO: group-relative advantages (each rollout's reward against its problem's group), no value head."""

    beta: Annotated[float, doc("the KL term's weight (k3 estimator, to the reference policy)")] = 0.04
    scale_rewards: Annotated[bool, doc("advantages divided by the group's reward std")] = True


class OPDConfig(GRPOConfig, frozen=True):
    """On-policy distillation: each sampled token's advantage is minus the reverse KL to the teacher there,
    -(log pi_student - log pi_teacher) (tinker-cookbook, slime, verl), optionally plus the task reward's group
    advantage; the clipped objective of GRPO. The teacher's log-probabilities are at temperature 1, so the student
    samples at 1 too (``temperature``)."""

    beta: Annotated[float, doc("the KL term's weight to the reference policy (the teacher anchors the student)")
                    ] = 0.0
    kl_coef: Annotated[float, doc("the reverse KL to the teacher's weight in the advantage")] = 1.0
    task_coef: Annotated[float, doc("the task reward's group advantage's weight (0: pure distillation)")] = 0.0


class LoRAConfig(_Config, frozen=True):
    """The LoRA adapter every kind trains (peft's ``LoraConfig``)."""

    r: Annotated[int, doc("the adapter's rank")] = 16
    lora_alpha: Annotated[float, doc("the scale: updates are multiplied by lora_alpha / r")] = 32
    lora_dropout: Annotated[float, doc("dropout on the adapter's input")] = 0.05
    target_modules: Annotated[list[str] | str, doc("the modules adapted (names, or peft's 'all-linear')")
                              ] = msgspec.field(default_factory=lambda: ["q_proj", "v_proj"])
    bias: Annotated[Literal["none", "all", "lora_only"], doc("which biases train")] = "none"
    use_rslora: Annotated[bool, doc("rank-stabilised scaling: lora_alpha / sqrt(r)")] = False
    use_dora: Annotated[bool, doc("weight-decomposed LoRA (DoRA)")] = False
    modules_to_save: Annotated[list[str] | None, doc("modules trained in full beside the adapter")] = None
    init_lora_weights: Annotated[bool | str, doc("how the adapter starts (true: B = 0, a no-op)")] = True
    layers_to_transform: Annotated[list[int] | None, doc("only these layers (None: all)")] = None
    rank_pattern: Annotated[dict[str, int], doc("a rank per module name pattern")] = {}
    alpha_pattern: Annotated[dict[str, float], doc("an alpha per module name pattern")] = {}


# the names protocol files written before these configs use
Settings, DPOSettings, LoraSettings = SFTConfig, DPOConfig, LoRAConfig
KINDS: dict[str, type[SFTConfig]] = {"sft": SFTConfig, "dpo": DPOConfig, "reflection": ReflectionConfig,
                                     "orm": RewardModelConfig, "prm": RewardModelConfig, "ppo": PPOConfig,
                                     "grpo": GRPOConfig, "opd": OPDConfig}
