"""The grpc transport's wire contract: ``transportbench.proto`` and what protoc generated from it.

``transportbench_pb2`` holds the messages, ``transportbench_pb2_grpc`` the service's stub and
servicer, each with its typed ``.pyi``. They are protoc's output, never edited: ``nox -s
proto`` regenerates them and ``tests/test_grpc.py`` fails when they no longer match the
``.proto``.
"""
