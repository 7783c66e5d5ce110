"""The kserve SDK's REST client against a running ``tideline server`` (V1 and V2).

The kserve SDK's install is about 450 MB (ray, grpc, pandas, ...), too much for
the test suite's install; tritonclient, the other OIP client, is in the suite
(tests/integration/test_clients.py). This script makes a virtualenv with
``kserve==KSERVE`` in ``~/.cache/tideline-compat/`` (once), starts
examples/fraud.yaml's learner and server on an embedded Redis, and runs the
SDK's ``InferenceRESTClient`` on its defaults: liveness and readiness in both
protocols, V1 predict, V2 infer with binary inputs (``set_data_from_numpy``'s
default) and with JSON, the answer read back by ``InferResponse.from_bytes``
and turned into its gRPC form (``to_grpc()``: parameters must be scalars).
Prints one line per check and exits non-zero if any fails.

Run with ``python bench/clients.py`` (``make bench`` runs it too); ``--install`` only
makes the virtualenv (``make test`` does, before pytest: its gRPC client is tested in
tests/integration/test_grpc.py; about 80 s and 450 MB the first time).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import yaml
from labels import Loop  # the processes, started with the CLI

ROOT = Path(__file__).resolve().parents[1]
KSERVE = "0.21.0"
VENV = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    / f"tideline-compat/kserve-{KSERVE}"
)

DRIVER = textwrap.dedent(
    """
    import asyncio, sys
    import numpy as np
    from kserve import InferenceRESTClient, RESTConfig, InferRequest, InferInput, InferResponse

    base, model = sys.argv[1], sys.argv[2]
    rows = [{"amount": 12.5, "hour": 3, "distance_km": 4.0, "account_age_days": 30,
             "merchant": "m-1", "country": "fr"},
            {"amount": 900.0, "hour": 2, "distance_km": 800.0, "account_age_days": 2,
             "merchant": "m-9", "country": "us"}]
    failed = 0

    def check(name, ok, detail=""):
        global failed
        failed += not ok
        print(("ok   " if ok else "FAIL ") + name + (": " + str(detail) if detail else ""))

    async def main():
        v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
        v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
        check("v1 is_server_live", await v1.is_server_live(base))
        check("v2 is_server_live", await v2.is_server_live(base))
        check("v2 is_server_ready", await v2.is_server_ready(base))
        check("v1 is_model_ready", await v1.is_model_ready(base, model))
        check("v2 is_model_ready", await v2.is_model_ready(base, model))
        out = await v1.infer(base, {"instances": rows}, model_name=model)
        expected = out["predictions"]
        check("v1 infer", len(expected) == 2, expected)
        for binary in (True, False):
            inputs = []
            for name in rows[0]:
                values = [r[name] for r in rows]
                if isinstance(values[0], str):
                    t = InferInput(name, [2], "BYTES")
                    t.set_data_from_numpy(np.array(values, dtype=object), binary_data=binary)
                else:
                    t = InferInput(name, [2], "FP64")
                    t.set_data_from_numpy(np.array(values, dtype=np.float64), binary_data=binary)
                inputs.append(t)
            res = await v2.infer(base, InferRequest(model, inputs, request_id="r-1"), model_name=model)
            got = res.outputs[0].as_numpy().tolist()
            check(f"v2 infer ({'binary' if binary else 'json'} inputs)",
                  np.allclose(got, expected), got)
            try:
                res.to_grpc()
                check("v2 answer to_grpc()", True)
            except Exception as e:
                check("v2 answer to_grpc()", False, repr(e))
        await v1.close()
        await v2.close()

    asyncio.run(main())
    sys.exit(1 if failed else 0)
    """
)


# (kserve's dependencies as resolved when this was pinned: the same SDK on every machine)
CONSTRAINTS = ROOT / "bench" / "kserve-constraints.txt"


def _venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"making {VENV} with kserve=={KSERVE} (about 450 MB, once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "-c", str(CONSTRAINTS), f"kserve=={KSERVE}"], check=True)  # fmt: skip
    return python


def main() -> int:
    python = _venv()
    if sys.argv[1:] == ["--install"]:  # (make test: the SDK for tests/integration/test_grpc.py)
        return 0
    manifest = yaml.safe_load((ROOT / "examples" / "fraud.yaml").read_text())
    manifest["metadata"]["namespace"] = "bench"
    with tempfile.TemporaryDirectory(prefix="tideline-bench-clients-") as d:
        loop = Loop(manifest, Path(d))
        try:
            loop.start("learner")
            loop.server()
            base = f"http://127.0.0.1:{loop.port}"
            print(f"kserve {KSERVE} against {base}", flush=True)
            return subprocess.run([str(python), "-c", DRIVER, base, loop.model.name]).returncode
        finally:
            loop.stop()


if __name__ == "__main__":
    sys.exit(main())
