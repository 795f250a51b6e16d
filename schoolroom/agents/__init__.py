"""Agents: plain classes with typed methods (messages in, messages out), wrapped as Ray actors by the runtime."""
