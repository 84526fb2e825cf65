"""A protoc plugin that runs the gRPC Python generator bundled in grpcio-tools.

grpcio-tools ships the gRPC Python code generator only inside its embedded protoc (as
`--grpc_python_out`), not as a standalone `protoc-gen-*` binary, and buf cannot drive it as a
protoc built-in. This wrapper makes it a regular local plugin for `buf generate`: it reads the
CodeGeneratorRequest buf sends on stdin, hands the already-compiled descriptors to
`grpc_tools.protoc --descriptor_set_in=...`, and answers with the generated files. No .proto is
parsed twice and nothing is fetched from the network.
"""

import os
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse()
    response.supported_features = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    with tempfile.TemporaryDirectory(prefix="grpc-python-gen-") as tmp:
        fds = descriptor_pb2.FileDescriptorSet(file=request.proto_file)
        fds_path = os.path.join(tmp, "input.binpb")
        with open(fds_path, "wb") as f:
            f.write(fds.SerializeToString())
        out = os.path.join(tmp, "out")
        os.mkdir(out)
        args = ["grpc_tools.protoc", f"--descriptor_set_in={fds_path}", f"--grpc_python_out={out}"]
        if request.parameter:
            args[-1] = f"--grpc_python_out={request.parameter}:{out}"
        rc = protoc.main(args + list(request.file_to_generate))
        if rc != 0:
            response.error = f"grpc_tools.protoc exited with status {rc}"
        else:
            for root, _dirs, files in os.walk(out):
                for name in sorted(files):
                    path = os.path.join(root, name)
                    generated = response.file.add()
                    generated.name = os.path.relpath(path, out).replace(os.sep, "/")
                    with open(path, encoding="utf-8") as f:
                        generated.content = f.read()
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
