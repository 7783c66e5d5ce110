"""tideline: online-learning models on Kubernetes (the runtime image's code)."""

__version__ = "0.1.0"
