"""packstore: the Python client of packstored, a content-addressed object store.

    import packstore

    with packstore.Client() as store:          # $PACKSTORE_SOCKET or /run/packstore/packstore.sock
        key = store.put(b"hello")              # the SHA-256 of the content
        assert store.get(key) == b"hello"
        key = store.put_file("big.bin")        # streamed, constant memory
        with store.open(key) as file:          # a seekable binary file
            header = file.read(4096)
        for key, data in store.get_many(keys): # data None when missing
            ...

On the daemon's machine, get, get_many, open and put_file of a file go
through the daemon's local fast path (open file descriptors instead of
bytes) when it offers it, and through gRPC otherwise, with the same
results; Client(fast_path=False) always uses gRPC.

Failures raise packstore.PackstoreError or a subclass (NotFound,
InvalidArgument, PermissionDenied, ResourceExhausted, DataLoss,
FailedPrecondition, Unavailable, DeadlineExceeded), with ``code`` (a
grpc.StatusCode) and ``details`` (the daemon's message).

The generated protocol modules are packstore.v1.packstore_pb2 and
packstore.v1.packstore_pb2_grpc, for calls this layer does not cover.
"""

from .client import (
    DEFAULT_SOCKET,
    CleanResult,
    Client,
    Compression,
    ObjectInfo,
    PackResult,
    Progress,
    PutMode,
    RepackResult,
    ValidateIssue,
    ValidateResult,
)
from .errors import (
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PackstoreError,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from .objectfile import ObjectFile

__all__ = [
    "Client",
    "DEFAULT_SOCKET",
    "PutMode",
    "Compression",
    "ObjectInfo",
    "ObjectFile",
    "Progress",
    "PackResult",
    "RepackResult",
    "CleanResult",
    "ValidateIssue",
    "ValidateResult",
    "PackstoreError",
    "NotFound",
    "InvalidArgument",
    "PermissionDenied",
    "ResourceExhausted",
    "DataLoss",
    "FailedPrecondition",
    "Unavailable",
    "DeadlineExceeded",
]
