"""Every shipped experiment config, and the README's example, decodes, protocol settings included."""

from __future__ import annotations

from pathlib import Path

import pytest

from schoolroom import config as configlib
from schoolroom.classroom import gpu_plan, preflight, runner

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.toml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_config_decodes(path):
    cfg, _ = configlib.load(path)
    _, settings, _ = runner.protocol_of(cfg, str(path))
    assert any(a.role == "student" for a in cfg.agents.values())
    assert preflight._devices(cfg) == [], "each agent's device agrees with the GPUs it asks for"
    assert gpu_plan.check(cfg, settings, {"GPU": 8.0, "CPU": 64.0}, {"H100": True}) == [], "on a node of 8 GPUs"


def test_the_readme_config_example_decodes(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("```toml\n[runtime]\n")
    path = tmp_path / "example.toml"
    path.write_text(readme[start + len("```toml\n"): readme.index("```", start + 7)])
    cfg, _ = configlib.load(path)
    _, settings, _ = runner.protocol_of(cfg, str(path))
    assert settings.start == "sft" and settings.teacher_settings["tutor"].writes == "solution"


def test_limit_is_written_into_the_problem_sets():
    cfg = configlib.decode({"data": {"a": {"source": "synthetic", "n": 50}, "b": {"source": "gsm8k", "limit": 7},
                                     "c": {"source": "gsm8k"}}})
    capped = configlib.with_limit(cfg, 10)
    assert (capped.data["a"].n, capped.data["b"].limit, capped.data["c"].limit) == (10, 7, 10)
    assert configlib.with_limit(cfg, None) is cfg


@pytest.mark.parametrize("name,key,error", [
    ("self_explore_synthetic", "protocol.sft.lr", r"unknown field `lr` - at `\$\.protocol\.sft`"),
    ("self_explore_synthetic", "protocol.dpo.beta_", r"unknown field `beta_` - at `\$\.protocol\.dpo`"),
    ("tailored_synthetic", "protocol.lora.rank", r"unknown field `rank` - at `\$\.protocol\.lora`"),
    ("tailored_synthetic", "protocol.train_settings.epoch", r"unknown field `epoch` - at `\$\.protocol\.train_settings`"),
    ("enriched_gsm8k", "protocol.train_settings.lr", r"unknown field `lr`"),
    ("reinforce_synthetic", "protocol.ppo.kl", r"unknown field `kl` - at `\$\.protocol\.ppo`"),
    ("reinforce_synthetic", "protocol.ppo.beta", r"unknown field `beta` - at `\$\.protocol\.ppo`"),
    ("best_of_n_synthetic", "protocol.prm_settings.lr", r"unknown field `lr` - at `\$\.protocol\.prm_settings`"),
])
def test_an_unknown_hyperparameter_is_a_config_error_naming_file_and_key(name, key, error):
    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.toml"
    cfg, _ = configlib.load(path, [f"{key}=0.1"])
    with pytest.raises(configlib.ConfigError, match=f"{name}.toml: .*{error}"):
        runner.protocol_of(cfg, str(path))


def test_hyperparameter_tables_carry_every_setting_with_its_real_default():
    from schoolroom.protocols.reinforce import Arm, ReinforceConfig, rl_request
    from schoolroom.protocols.self_explore import SelfExploreConfig
    from schoolroom.training.settings import DPOConfig, LoRAConfig, PPOConfig, SFTConfig

    cfg = configlib.decode_section({"sft": {"learning_rate": 1e-4, "epochs": 2}, "lora": {"r": 8}}, SelfExploreConfig,
                                   "protocol")
    assert cfg.sft.asdict() == SFTConfig().asdict() | {"learning_rate": 1e-4, "epochs": 2.0}
    assert cfg.lora.asdict() == LoRAConfig().asdict() | {"r": 8} and cfg.dpo.asdict()["beta"] == 0.1
    assert SFTConfig().learning_rate == 5e-4 and DPOConfig.of({})["beta"] == 0.1 and PPOConfig().kl_coef == 0.05
    # an arm's own settings go over the protocol's table, the rest of the algorithm's defaults under both
    rc = configlib.decode_section({"ppo": {"learning_rate": 1e-4, "epochs": 2}, "arms": [
        {"name": "a", "settings": {"learning_rate": 1e-5}}]}, ReinforceConfig, "protocol")
    hyper = rl_request(rc, rc.arms[0], [], [], None, None).hyper
    assert (hyper["learning_rate"], hyper["epochs"], hyper["kl_coef"]) == (1e-5, 2.0, 0.05), hyper
    with pytest.raises(configlib.ConfigError, match=r"arm a: settings: Object contains unknown field `beta`"):
        configlib.decode_section({"arms": [{"name": "a", "settings": {"beta": 0.1}}]}, ReinforceConfig, "protocol")
    assert Arm(name="g", algorithm="grpo", settings={"beta": 0.1}).settings == {"beta": 0.1}


def test_schoolroom_protocols_shows_every_setting_with_its_default_and_no_null():
    from schoolroom.classroom.loading import PROTOCOLS, load_builtin, settings_lines

    load_builtin()
    for name in ("first_step", "enriched", "tailored", "self_explore", "reinforce", "best_of_n", "distill"):
        lines = settings_lines(PROTOCOLS[name].settings)
        assert not [ln for ln in lines if " null " in f" {ln} "], name
    lines = settings_lines(PROTOCOLS["reinforce"].settings)
    assert any(ln.split()[:3] == ["ppo.kl_coef", "float", "0.05"] and "KL penalty" in ln for ln in lines)
    assert any(ln.split()[:3] == ["grpo.learning_rate", "float", "0.00001"] for ln in lines)
    # a nested table's own default (first_step's teacher_sft = SFTConfig(epochs=3)), not its class's
    lines = settings_lines(PROTOCOLS["first_step"].settings)
    assert any(ln.split()[:3] == ["teacher_sft.epochs", "float", "3"] for ln in lines)
