"""The tideline operator: kopf handlers, pure manifest builders and the rollout state machine.

Nothing here yet but the package: it is importable as ``tideline_operator`` (never as
``operator``, which is a stdlib module).
"""
