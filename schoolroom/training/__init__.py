"""Training with TRL and peft. Never talks to Ray."""
