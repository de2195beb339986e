"""``wsgi.file_wrapper``: a file the server may send by itself.

An application returns ``environ['wsgi.file_wrapper'](f, block_size)``. When
``f`` is a real file positioned where the body starts, the native server sends
the bytes from there without the application thread; otherwise the wrapper is
iterated like any response, ``block_size`` bytes at a time.
"""

__all__ = ["FileWrapper", "ReadOnlyFileBasedBuffer"]


def _is_seekable(f):
    """``f.seekable()`` when the file says; otherwise whether it has both
    ``seek`` and ``tell``."""
    if hasattr(f, "seekable"):
        return f.seekable()
    return hasattr(f, "seek") and hasattr(f, "tell")


class FileWrapper:
    """Wraps ``filelike`` for sending. ``filelike`` and ``block_size`` are
    read by the server; ``seek``, ``tell`` and ``seekable`` are the file's own
    and exist only when the file can seek, so that middleware can serve byte
    ranges."""

    def __init__(self, filelike, block_size=32768):
        self.filelike = filelike
        self.block_size = block_size
        if _is_seekable(filelike):
            if hasattr(filelike, "seekable"):
                self.seekable = filelike.seekable
            self.seek = filelike.seek
            self.tell = filelike.tell

    @property
    def file(self):
        """Waitress's name for the wrapped file."""
        return self.filelike

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.block_size)
        if not data:
            raise StopIteration
        return data

    def close(self):
        """Closes the wrapped file, if it can be closed."""
        if hasattr(self.filelike, "close"):
            self.filelike.close()


# Waitress's class name, for code that looks for it.
ReadOnlyFileBasedBuffer = FileWrapper
