"""The machinery a protocol runs inside: the Classroom and its call path (keys, memo, turns, ordered flush), handles
to agents, pending calls, the runner (run, resume), replay, preflight checks and loading protocols from files."""
