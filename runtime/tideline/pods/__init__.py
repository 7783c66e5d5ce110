"""What runs in a model's pods: the learner, the monitor and the prediction server
(``tideline learner|monitor|serve``), and the Redis and Kafka access they share.

The pure library they are built on (spec, features, algorithms, drift, the wire
contracts) is the top level of :mod:`tideline`; the local demo is :mod:`tideline.demo`.
"""
