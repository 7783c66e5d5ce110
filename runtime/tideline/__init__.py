"""tideline: online-learning models on Kubernetes (the runtime image's code)."""

__version__ = "0.1.0"

# The runtime image's name: `make image` tags IMAGE:__version__, the chart's
# image.repository and the operator's default name it (tests hold them to this).
IMAGE = "tideline/runtime"
