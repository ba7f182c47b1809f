"""Compile protos/ into gen/python (messages, gRPC stubs, mypy stubs) and build/ descriptor sets.

Outputs:
  gen/python/...                 python modules, *_pb2_grpc.py and .pyi stubs (not committed)
  build/descriptors.binpb        full descriptor set for Envoy (--include_imports, with
                                 google/api and google/rpc/error_details.proto)
  build/image.binpb              the same with source info: the input for buf lint/breaking

protovalidate's `buf/validate/validate.proto` ships inside the installed protovalidate
package only as a serialized descriptor, so we hand protoc that descriptor through
--descriptor_set_in instead of vendoring a copy of the .proto source.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import shutil
import sys
from pathlib import Path

import google.api
from google.protobuf import descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
EXTRA_FILES = [
    "google/rpc/error_details.proto",
    "google/rpc/status.proto",
    "google/api/httpbody.proto",
]


def validate_descriptor_set(dest: Path) -> None:
    spec = importlib.util.find_spec("protovalidate")
    if spec is None or spec.origin is None:
        raise SystemExit("protovalidate is not installed")
    generated = Path(spec.origin).parent / "_gen" / "buf" / "validate" / "validate_pb.py"
    blob = None
    for node in ast.walk(ast.parse(generated.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "file_desc":
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, bytes):
                blob = first.value
    if blob is None:
        raise SystemExit(f"could not find the validate.proto descriptor in {generated}")
    fds = descriptor_pb2.FileDescriptorSet()
    for module in (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2):
        fdp = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(fdp)
        fds.file.append(fdp)
    fds.file.append(descriptor_pb2.FileDescriptorProto.FromString(blob))
    # google/longrunning/operations.proto (AIP-151 Operation) ships in googleapis-common-protos
    # under another file name (operations_proto.proto); its descriptor carries the real one.
    from google.longrunning import operations_proto_pb2

    longrunning = descriptor_pb2.FileDescriptorProto()
    operations_proto_pb2.DESCRIPTOR.CopyToProto(longrunning)
    fds.file.append(longrunning)
    dest.write_bytes(fds.SerializeToString())


def include_args(proto_root: Path, deps: Path) -> list[str]:
    googleapis = Path(google.api.__path__[0]).parent.parent  # site-packages/google/api
    grpc_tools_protos = Path(protoc.__file__).parent / "_proto"
    return [
        f"--descriptor_set_in={deps}",
        f"-I{proto_root}",
        f"-I{googleapis}",
        f"-I{grpc_tools_protos}",
    ]


def run_protoc(args: list[str]) -> None:
    code = protoc.main(["protoc", *args])
    if code != 0:
        raise SystemExit(f"protoc failed ({code})")


def own_protos(proto_root: Path) -> list[str]:
    return sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))


def build_image(proto_root: Path, out: Path, build: Path) -> None:
    """Descriptor set with source info, used by buf (lint/breaking) and Envoy."""
    deps = build / "validate-deps.binpb"
    validate_descriptor_set(deps)
    files = own_protos(proto_root)
    run_protoc(
        [
            *include_args(proto_root, deps),
            "--include_imports",
            "--include_source_info",
            f"-o{out}",
            *files,
            *EXTRA_FILES,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--protos", type=Path, default=ROOT / "protos")
    parser.add_argument("--image-only", type=Path, help="only write a buf image to this path")
    args = parser.parse_args()
    build = ROOT / "build"
    build.mkdir(exist_ok=True)
    if args.image_only:
        build_image(args.protos, args.image_only, build)
        return

    gen = ROOT / "gen" / "python"
    if gen.exists():
        shutil.rmtree(gen)
    gen.mkdir(parents=True)
    deps = build / "validate-deps.binpb"
    validate_descriptor_set(deps)
    files = own_protos(args.protos)
    includes = include_args(args.protos, deps)
    run_protoc(
        [
            *includes,
            f"--python_out={gen}",
            f"--grpc_python_out={gen}",
            f"--mypy_out={gen}",
            f"--mypy_grpc_out={gen}",
            *files,
            "buf/validate/validate.proto",
        ]
    )
    # Namespace packages would do, but explicit __init__ files keep mypy and pytest simple.
    for directory in [p for p in gen.rglob("*") if p.is_dir()]:
        (directory / "__init__.py").touch()
    build_image(args.protos, build / "descriptors.binpb", build)
    print(f"generated {len(files)} proto files into {gen.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
