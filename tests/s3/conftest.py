# server.py runs in moto's own virtualenv (build.sh): it imports boto3 and moto, which the
# suite's does not have - not a module for pytest's doctest collection
collect_ignore = ["server.py"]
