"""Where agents run. ``worker.py``: the Worker that holds one agent and runs its methods, in this process
(``Inline``) or as a Ray actor; ``actors.py``: Ray actors with the resources their config asks for, replicas,
restarts, placement groups, adapters sent between nodes, and ``spawn`` (inline or on Ray, as the runtime says)."""
