"""Generated protobuf messages and gRPC stubs of ``stackshift.v1``.

The ``*_pb2.py``, ``*_pb2_grpc.py`` modules and their ``.pyi`` stubs are generated from
``proto/`` by ``bash sdk-gen/generate.sh`` (grpcio-tools + mypy-protobuf); do not edit them.
This ``__init__.py`` is hand-written and only makes ``stackshift.v1`` a package.
"""
