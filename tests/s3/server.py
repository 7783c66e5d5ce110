"""moto's S3 server on 127.0.0.1, with its credentials checked, for the warm-start tests.

Run by the Python of moto's own virtualenv (tests/s3/build.sh), not the suite's: it starts
``moto.server.ThreadedMotoServer`` on a free port, makes an IAM user with S3 rights and an
access key for it, prints ``{"endpoint", "accessKey", "secretKey"}`` as one JSON line, and
serves until its standard input closes. Requests are signed and checked (moto's
``INITIAL_NO_AUTH_ACTION_COUNT``: the first few, this setup's own, go unchecked), so a
wrong secret is refused as S3 refuses it.
"""

from __future__ import annotations

import json
import os
import sys

SETUP_ACTIONS = 3  # CreateUser, PutUserPolicy, CreateAccessKey
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_ACTIONS)
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import boto3  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

POLICY = {"Version": "2012-10-17",
          "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}  # fmt: skip


def main() -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    iam = boto3.client("iam", endpoint_url=endpoint, aws_access_key_id="setup",
                       aws_secret_access_key="setup")  # fmt: skip
    iam.create_user(UserName="tideline")
    iam.put_user_policy(UserName="tideline", PolicyName="s3", PolicyDocument=json.dumps(POLICY))
    key = iam.create_access_key(UserName="tideline")["AccessKey"]
    print(json.dumps({"endpoint": endpoint, "accessKey": key["AccessKeyId"],
                      "secretKey": key["SecretAccessKey"]}), flush=True)  # fmt: skip
    sys.stdin.read()  # until the suite closes it (or ends)
    server.stop()


if __name__ == "__main__":
    main()
