"""The S3 server the warm-start tests start: moto's (tests/s3/server.py), run by the Python
of its own virtualenv (``make s3-bin``, tests/s3/build.sh), on 127.0.0.1."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).parent


class MotoServer:
    """moto's S3 server in a process of its own, credentials checked: ``endpoint``,
    ``access_key`` and ``secret_key`` (an IAM user's, with S3 rights), ``put()``."""

    def __init__(self) -> None:
        found = subprocess.run(["bash", str(HERE / "build.sh"), "--find"], capture_output=True,
                               text=True)  # fmt: skip
        if found.returncode != 0:
            raise RuntimeError(found.stderr.strip())
        python = found.stdout.strip().splitlines()[-1]
        self.proc = subprocess.Popen([python, str(HERE / "server.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)  # fmt: skip
        assert self.proc.stdout is not None
        said = self._said(self.proc.stdout)
        self.endpoint: str = said["endpoint"]
        self.access_key: str = said["accessKey"]
        self.secret_key: str = said["secretKey"]

    def _said(self, out: IO[str]) -> dict[str, Any]:
        for line in out:  # (moto prints a line of its own first)
            if line.startswith("{"):
                return dict(json.loads(line))
        self.close()
        raise RuntimeError("moto's server stopped before it said where it listens")

    def client(self, secret_key: str | None = None) -> Any:
        from minio import Minio

        return Minio(self.endpoint.removeprefix("http://"), access_key=self.access_key,
                     secret_key=secret_key or self.secret_key, secure=False,
                     region="us-east-1")  # fmt: skip

    def put(self, bucket: str, key: str, data: bytes) -> None:
        """``data`` as the object ``key`` of ``bucket`` (made if it is not there)."""
        c = self.client()
        if not c.bucket_exists(bucket):
            c.make_bucket(bucket)
        c.put_object(bucket, key, io.BytesIO(data), len(data))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # (the server stops when its standard input closes)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> MotoServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
