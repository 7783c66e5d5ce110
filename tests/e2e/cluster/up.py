"""``make cluster``: the test suite's one-node cluster, for a person to try tideline by hand.

Starts the control plane and the real node (``node.py``) with the runtime image and
the pause and Redis images imported, prints the kubeconfig and the commands to try,
and runs until Ctrl-C (or SIGTERM), when it tears everything down. ``make
cluster-down`` (``--down``) removes what a killed run left behind.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from tests.e2e.cluster.node import REDIS_IMAGE, RealCluster, runtime_archive, sweep_all

ROOT = Path(__file__).resolve().parents[3]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make cluster", description=__doc__)
    parser.add_argument(
        "--down", action="store_true", help="remove what a killed run left, and exit"
    )
    args = parser.parse_args(argv)
    if args.down:
        removed = sweep_all()
        print(
            f"[node] {len(removed)} things removed" if removed else "[node] nothing left to remove"
        )
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        cluster = RealCluster([runtime_archive()])
    except RuntimeError as e:
        print(f"make cluster: {e}", file=sys.stderr)
        return 1
    with cluster:
        b, kubeconfig = cluster.cp.bin, cluster.cp.kubeconfig
        print(
            f"""
The cluster is up (Ctrl-C stops it and removes everything it made).

  export KUBECONFIG={kubeconfig} PATH={b}:$PATH
  kubectl get nodes -o wide
  helm install tideline {ROOT / "charts" / "tideline"} -n tideline-system --create-namespace \\
      --set redis.bundled.enabled=true --set redis.bundled.image={REDIS_IMAGE} \\
      --set redis.bundled.persistence.enabled=false
  kubectl apply -f {ROOT / "examples" / "fraud.yaml"}
  kubectl get om,pods
  curl -s $(kubectl get svc fraud -o jsonpath='http://{{.spec.clusterIP}}:{{.spec.ports[0].port}}')/v1/models/fraud

Pods and Services answer from this machine at their 198.18.x.x addresses.
""",
            flush=True,
        )
        stop.wait()
        print("[node] stopping", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
