"""ObjectFile: a stored object as a read-only, seekable binary file.

Client.open() makes them. Every read the read-ahead buffer cannot serve is
one Get of a byte range, or, for an uncompressed object opened through the
local fast path, one pread on the object's file descriptor, so code that
seeks around a file (zipfile, tarfile, h5py) reads only the parts it needs.
Objects never change once stored, so the buffer never goes stale.
"""

import io

__all__ = ["ObjectFile"]


class ObjectFile(io.BufferedIOBase):
    """A read-only view of one stored object, at a position like any file.

    ``key``, ``name`` (the key), ``size`` (bytes) and ``info`` (its
    ObjectInfo when opened) describe it. Like a file object it is not meant
    to be shared between threads without a lock.

    Reads raise what Client.get() raises: NotFound if the object was deleted
    since it was opened, DataLoss for corrupt stored bytes, Unavailable,
    DeadlineExceeded. A file that reads through a descriptor (the fast
    path) needs no daemon for its reads and goes on reading an object
    deleted meanwhile; the descriptor is closed with the file. Writing raises
    io.UnsupportedOperation; anything on a closed file raises ValueError.
    """

    def __init__(self, info, read_range, buffer_size=256 * 1024, on_close=None):
        super().__init__()
        self.info = info
        self._read_range = read_range  # (offset, length) -> bytes
        self._buffer_size = max(0, int(buffer_size))
        self._pos = 0
        self._buffer = b""
        self._buffer_start = 0
        # Called once, by the first close(); set last, so that a file whose
        # construction failed leaves it to the caller.
        self._on_close = on_close

    # -- what it is ---------------------------------------------------------------

    @property
    def key(self):
        return self.info.key

    @property
    def name(self):
        return self.info.key

    @property
    def size(self):
        """The object's size in bytes."""
        return self.info.size

    @property
    def mode(self):
        return "rb"

    def readable(self):
        self._check_open()
        return True

    def seekable(self):
        self._check_open()
        return True

    def writable(self):
        self._check_open()
        return False

    def __repr__(self):
        state = "closed" if self.closed else f"at {self._pos}"
        return f"<packstore.ObjectFile {self.key} size={self.size} {state}>"

    # -- position -----------------------------------------------------------------

    def tell(self):
        self._check_open()
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        """Moves to ``offset`` from the start (SEEK_SET), the position
        (SEEK_CUR) or the end (SEEK_END); the new position. Past the end is
        allowed (reads there return b""); before the start is ValueError."""
        self._check_open()
        if whence == io.SEEK_SET:
            base = 0
        elif whence == io.SEEK_CUR:
            base = self._pos
        elif whence == io.SEEK_END:
            base = self.size
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        position = base + int(offset)
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._pos = position
        return position

    # -- reading ------------------------------------------------------------------

    def read(self, size=-1):
        """Up to ``size`` bytes from the position (all that is left when
        ``size`` is negative or None); b"" at the end."""
        self._check_open()
        left = self.size - self._pos
        if size is None or size < 0 or size > left:
            size = max(0, left)
        if size == 0:
            return b""
        parts = []
        cached = self._from_buffer(size)
        if cached:
            parts.append(cached)
            size -= len(cached)
        if size > 0:
            if size >= self._buffer_size:
                data = self._read_range(self._pos, size)
                self._pos += len(data)
                parts.append(data)
            elif self._fill():
                parts.append(self._from_buffer(size))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read1(self, size=-1):
        return self.read(size)

    def readall(self):
        return self.read(-1)

    def readinto(self, buffer):
        """Reads into a writable bytes-like object; the number of bytes read
        (0 at the end)."""
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def readinto1(self, buffer):
        return self.readinto(buffer)

    def peek(self, size=0):
        """Bytes from the position without moving it (at least one unless at
        the end; at most what the buffer holds)."""
        self._check_open()
        if self._pos >= self.size:
            return b""
        offset = self._pos - self._buffer_start
        if not 0 <= offset < len(self._buffer):
            self._fill()
            offset = 0
        return self._buffer[offset:]

    def close(self):
        self._buffer = b""
        on_close, self._on_close = getattr(self, "_on_close", None), None
        try:
            if on_close is not None:
                on_close()
        finally:
            super().close()

    # -- the buffer ---------------------------------------------------------------

    def _from_buffer(self, size):
        offset = self._pos - self._buffer_start
        if not 0 <= offset < len(self._buffer):
            return b""
        data = self._buffer[offset:offset + size]
        self._pos += len(data)
        return data

    def _fill(self):
        """Reads ahead from the position; whether anything came."""
        self._buffer = self._read_range(self._pos, max(1, self._buffer_size))
        self._buffer_start = self._pos
        return bool(self._buffer)

    def _check_open(self):
        if self.closed:
            raise ValueError("I/O operation on closed file")
