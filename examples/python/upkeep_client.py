#!/usr/bin/python3
"""A short client of upkeep's FleetService, with Debian's python3-grpcio.

The modules it imports (upkeep/v1/*_pb2.py, *_pb2_grpc.py) are generated from proto/ at build
time (`ninja python_client`, into build/examples/python); run it with PYTHONPATH pointing there,
as `make python-example` and the test do.

    upkeep_client.py --controller 127.0.0.1:7400 services      # server reflection
    upkeep_client.py --controller 127.0.0.1:7400 stacks        # name, hosts, Ready
    upkeep_client.py --controller 127.0.0.1:7400 watch [--count N] [--stack NAME]

With TLS give --tls-dir (ca.crt, client.crt, client.key as made by `upkeepctl tls`) and/or
--token (a bearer token from `upkeep-controller token create`).
"""
import argparse
import os
import sys

import grpc

from upkeep.v1 import fleet_service_pb2 as fleet
from upkeep.v1 import fleet_service_pb2_grpc as fleet_grpc


def channel(args):
    if not args.tls_dir and not args.token:
        return grpc.insecure_channel(args.controller)
    read = lambda name: open(os.path.join(args.tls_dir, name), "rb").read() if args.tls_dir else None
    creds = grpc.ssl_channel_credentials(
        root_certificates=read("ca.crt"),
        private_key=read("client.key") if args.tls_dir and os.path.exists(
            os.path.join(args.tls_dir, "client.key")) else None,
        certificate_chain=read("client.crt") if args.tls_dir and os.path.exists(
            os.path.join(args.tls_dir, "client.crt")) else None)
    if args.token:
        creds = grpc.composite_channel_credentials(
            creds, grpc.access_token_call_credentials(args.token))
    return grpc.secure_channel(args.controller, creds)


def varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        result |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf):
    """(field number, bytes) of every length-delimited field of a serialized message."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        if key & 7 == 2:
            n, i = varint(buf, i)
            yield key >> 3, buf[i:i + n]
            i += n
        elif key & 7 == 0:
            _, i = varint(buf, i)
        else:
            raise ValueError("unexpected wire type %d" % (key & 7))


def services(ch):
    # grpc.reflection.v1alpha by hand (Debian ships no python reflection package): a request
    # with list_services (field 7) set; the answer's list_services_response (6) holds services.
    call = ch.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    for resp in call(iter([b"\x3a\x00"]), timeout=10):
        for num, value in fields(resp):
            if num == 6:
                for _, service in fields(value):
                    for n, name in fields(service):
                        if n == 1:
                            print(name.decode())
        return 0


def stacks(stub):
    resp = stub.ListStacks(fleet.ListStacksRequest(), timeout=10)
    for s in resp.stacks:
        ready = next((c for c in s.status.conditions if c.type == "Ready"), None)
        print("%-16s %-20s %s" % (s.metadata.name, ",".join(s.spec.hosts),
                                  ready.status if ready else "Unknown"))
    return 0


def watch(stub, stack, count):
    seen = 0
    for e in stub.WatchEvents(fleet.WatchEventsRequest(stack=stack)):
        print("%d %s %s %s %s" % (e.seq, e.type, e.reason, e.stack or "-", e.message), flush=True)
        seen += 1
        if count and seen >= count:
            return 0
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--controller", default=os.environ.get("UPKEEP_CONTROLLER", "127.0.0.1:7400"))
    p.add_argument("--tls-dir", default=os.environ.get("UPKEEP_TLS_DIR", ""))
    p.add_argument("--token", default=os.environ.get("UPKEEP_TOKEN", ""))
    p.add_argument("command", choices=["services", "stacks", "watch"])
    p.add_argument("--stack", default="")
    p.add_argument("--count", type=int, default=0, help="watch: stop after N events")
    args = p.parse_args()
    ch = channel(args)
    stub = fleet_grpc.FleetServiceStub(ch)
    try:
        if args.command == "services":
            return services(ch)
        if args.command == "stacks":
            return stacks(stub)
        return watch(stub, args.stack, args.count)
    except grpc.RpcError as e:
        print("upkeep_client: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
