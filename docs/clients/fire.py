"""Fires order.created over gRPC with grpcio and prints the delivery ids, one
a line. Needs HERALD_GRPC (127.0.0.1:50051) and HERALD_TOKEN; HERALD_TENANT is
optional. The stubs herald/v1/herald_pb2*.py are generated from proto/ and
found through PYTHONPATH (see README.md), from the repository's root:

    mkdir -p stubs && python3 -m grpc_tools.protoc -I proto --python_out=stubs \
        --grpc_python_out=stubs proto/herald/v1/herald.proto
    PYTHONPATH=stubs python3 docs/clients/fire.py
"""

import json
import os
import sys

import grpc

from herald.v1 import herald_pb2, herald_pb2_grpc

channel = grpc.insecure_channel(os.environ["HERALD_GRPC"])
request = herald_pb2.FireRequest(
    tenant=os.environ.get("HERALD_TENANT", ""),
    event="order.created",
    # The event's data is a JSON document given as a string.
    json=json.dumps({"order_id": 42}),
)
try:
    answer = herald_pb2_grpc.IngestStub(channel).Fire(
        request,
        metadata=[("authorization", f"Bearer {os.environ['HERALD_TOKEN']}")],
        timeout=10,
    )
except grpc.RpcError as error:
    # Herald's messages say what was wrong and what to do about it.
    print(f"herald: {error.code().name}: {error.details()}", file=sys.stderr)
    sys.exit(1)
for delivery_id in answer.delivery_ids:
    print(delivery_id)
