"""The exceptions of the packstore client.

Every failed call raises a PackstoreError, or one of its subclasses for the
status codes a caller can act on. Each carries

- ``code``: the grpc.StatusCode the call ended with;
- ``details``: the daemon's message (for failures on the client side, such
  as no daemon on the socket, gRPC's own);
- ``method``: the ObjectStore method that failed ("Get", "PutMany"...), or
  None;
- ``socket``: the socket path the client was talking to.

docs/protocol.md lists which call fails with which code.
"""

import os

import grpc

__all__ = [
    "PackstoreError",
    "NotFound",
    "InvalidArgument",
    "PermissionDenied",
    "ResourceExhausted",
    "DataLoss",
    "FailedPrecondition",
    "Unavailable",
    "DeadlineExceeded",
    "error_from_rpc",
    "error_from_code",
]


class PackstoreError(Exception):
    """A call to packstored failed; ``code`` says how, ``details`` why."""

    default_code = grpc.StatusCode.UNKNOWN

    def __init__(self, details="", code=None, method=None, socket=None):
        self.code = code if code is not None else self.default_code
        self.details = details or ""
        self.method = method
        self.socket = socket
        super().__init__(self._describe())

    def _describe(self):
        where = f"{self.method}: " if self.method else ""
        return f"{where}{self.code.name}: {self.details}"

    def __reduce__(self):
        # Keeps code, method and socket when pickled (multiprocessing).
        return (type(self), (self.details, self.code, self.method, self.socket))


class NotFound(PackstoreError):
    """Get or open() of a key the store does not hold."""

    default_code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(PackstoreError):
    """A malformed key, an unknown put mode or compression, verify with a
    byte range, a bad List ``after``."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class PermissionDenied(PackstoreError):
    """The peer is not in the daemon's allow lists, or called a maintenance
    operation without being an admin."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(PackstoreError):
    """A limit of the daemon: object size, free-disk reserve, message size,
    or too many streaming calls at once."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DataLoss(PackstoreError):
    """The stored bytes are corrupt (a verifying read that did not match its
    key, a truncated or undecodable object): have an admin run validate()."""

    default_code = grpc.StatusCode.DATA_LOSS


class FailedPrecondition(PackstoreError):
    """A maintenance call while another maintenance operation runs."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class DeadlineExceeded(PackstoreError):
    """The call's deadline (``timeout=``) expired."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(PackstoreError):
    """The daemon cannot be reached (not running, no permission on the
    socket, refused by the allow lists) or is shutting down."""

    default_code = grpc.StatusCode.UNAVAILABLE

    def _describe(self):
        where = f"{self.method}: " if self.method else ""
        if not self.socket:
            return f"{where}packstored is unavailable: {self.details}"
        path = self.socket
        if path.startswith("unix://"):
            path = path[len("unix://"):]
        elif path.startswith("unix:"):
            path = path[len("unix:"):]
        elif path.startswith(_OTHER_SCHEMES):
            return f"{where}packstored at {path} is unavailable: {self.details}"
        if not os.path.exists(path):
            hint = (f"there is no socket at {path}: is packstored running? "
                    "(Client(socket=...) or $PACKSTORE_SOCKET name another socket)")
        elif not os.access(path, os.W_OK):
            hint = (f"no permission to connect to {path} "
                    "(its owner, group and mode decide who may)")
        else:
            hint = f"packstored on {path} is unavailable"
        return f"{where}{hint}: {self.details}"


# gRPC targets that are not a Unix socket path (client.py passes them on).
_OTHER_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix-abstract:", "vsock:", "xds:")

_BY_CODE = {
    cls.default_code: cls
    for cls in (NotFound, InvalidArgument, PermissionDenied, ResourceExhausted, DataLoss,
                FailedPrecondition, DeadlineExceeded, Unavailable)
}


def error_from_rpc(error, method=None, socket=None):
    """The PackstoreError (subclass) for a grpc.RpcError."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    cls = _BY_CODE.get(code, PackstoreError)
    return cls(details or "", code=code, method=method, socket=socket)


def error_from_code(code, details, method=None, socket=None):
    """The PackstoreError (subclass) for a grpc.StatusCode and a message
    (the fast path's ERR answers)."""
    cls = _BY_CODE.get(code, PackstoreError)
    return cls(details or "", code=code, method=method, socket=socket)
