"""The monitor's parts, each with one job and no I/O: :mod:`tideline.pods.monitor` reads the
log and the labels from Redis, hands them in, and writes what they decide.

* :mod:`~tideline.monitoring.driftsample`: which logged requests and rows drift reads;
* :mod:`~tideline.monitoring.tracks`: what a joined label scores, on which track and version;
* :mod:`~tideline.monitoring.judging`: whether feedback or labelled samples judge versions;
* :mod:`~tideline.monitoring.candidates`: the versions the operator may choose between, and the
  evidence on each (:mod:`tideline.evidence`);
* :mod:`~tideline.monitoring.signals`: feature, prediction and concept drift as events;
* :mod:`~tideline.monitoring.counters`: the servers' reports, as error rates and latencies;
* :mod:`~tideline.monitoring.outcomes`: which predictions' outcomes are all known (labelDefault);
* :mod:`~tideline.monitoring.capacity`: whether the store holds ``labelWindow`` of log;
* :mod:`~tideline.monitoring.summary`: the health summary the operator reads, from all of them.
"""
