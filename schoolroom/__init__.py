"""schoolroom: classroom experiments with language models."""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Run":  # imported on first use: pandas stays out of agents and Ray workers
        from schoolroom.analysis import Run

        return Run
    raise AttributeError(f"module 'schoolroom' has no attribute {name!r}")
