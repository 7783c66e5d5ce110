"""tideline: online-learning models on Kubernetes (the runtime image's code).

Three kinds of code, three places:

* the pure library, here at the top level: the resource (``spec``), feature
  encoding (``features``), the online algorithms (``algorithms``), drift detectors and
  evaluation (``drift``, ``evaluate``, ``evidence``, ``health``), and what crosses
  process boundaries (``contracts``, ``predlog``, ``samples``, ``codec``) - no I/O;
* what runs in the pods (:mod:`tideline.pods`): the learner, the monitor, the
  prediction server, and the Redis and Kafka access they share;
* the local demo (:mod:`tideline.demo`), ``tideline run``.

``tideline.cli`` is the one entry point of all three.
"""

__version__ = "0.1.0"

# The runtime image's name: `make image` tags IMAGE:__version__, the chart's
# image.repository and the operator's default name it (tests hold them to this).
IMAGE = "tideline/runtime"
