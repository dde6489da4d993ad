"""Regenerate the Python modules beside ``transportbench.proto``: ``nox -s proto``.

protoc (from grpcio-tools) writes the messages (``transportbench_pb2.py``) and the service's
stub and servicer (``transportbench_pb2_grpc.py``); mypy-protobuf's plugins write their typed
``.pyi``. The output depends on those tools' versions, so the ones pinned in pyproject's
``test`` extra generate what is committed, and ``tests/test_grpc.py`` regenerates into a
temporary directory and compares, byte for byte.

``python -m transports.proto.regenerate [ROOT]`` writes under ROOT (default: this checkout),
at ``transports/proto/``, as protoc names the files after the .proto's path.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["GENERATED", "PROTO", "ROOT", "generate", "main"]

PROTO = Path(__file__).with_name("transportbench.proto")
#: The checkout: protoc resolves the .proto relative to it, so the generated modules import
#: each other as ``transports.proto.transportbench_pb2``.
ROOT = PROTO.parents[2]
#: What protoc writes, relative to the root it is given.
GENERATED = tuple(
    Path("transports/proto") / name
    for name in (
        "transportbench_pb2.py",
        "transportbench_pb2.pyi",
        "transportbench_pb2_grpc.py",
        "transportbench_pb2_grpc.pyi",
    )
)


def _plugin(name: str) -> str:
    """mypy-protobuf's protoc plugin, from this interpreter's environment first."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install mypy-protobuf (the test extra)")
    return found


def generate(root: Path) -> list[Path]:
    """Run protoc on the .proto, writing under ``root``; the files written.

    Raises ``subprocess.CalledProcessError`` (with protoc's stderr) when protoc fails.
    """
    out = str(root)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={ROOT}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            str(PROTO.relative_to(ROOT)),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return [root / path for path in GENERATED]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for path in generate(Path(args[0]) if args else ROOT):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
