"""``kubectl tideline``: the OnlineModel's status read and its rollout steered from a terminal.

Like ``kubectl argo rollouts``: ``list``, ``get [-w]``, ``history`` (each with ``-o
json|yaml``), ``deadletters`` (from the model's Redis), and ``promote``,
``abort``, ``rollback``, ``pause`` and ``resume``, which set (and remove) the annotations the
operator reads (:data:`tideline_operator.rollout.PROMOTE` and the others; docs/operator.md,
"Annotations"). Installed with the package as the console script ``kubectl-tideline``
(kubectl finds plugins named ``kubectl-*`` on the PATH), and as ``tideline ctl``.

:mod:`tideline.ctl.view` renders an object (and its Events) as text,
:mod:`tideline.ctl.output` as data, and :mod:`tideline.ctl.requests` says what annotations
a request sets, all pure; :mod:`tideline.ctl.main` makes the API calls, and
:mod:`tideline.ctl.deadletters` alone reads the model's Redis.
"""
