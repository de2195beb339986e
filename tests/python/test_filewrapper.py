"""FileWrapper (wsgi.file_wrapper) and ClientDisconnected."""

import io

import pytest

from maitre.errors import ClientDisconnected
from maitre.filewrapper import FileWrapper, ReadOnlyFileBasedBuffer


class ReadOnly:
    """Has read() only: not seekable."""

    def __init__(self, data):
        self._io = io.BytesIO(data)

    def read(self, n=-1):
        return self._io.read(n)


class SeekTellOnly(ReadOnly):
    """seek and tell, but no seekable()."""

    def seek(self, *args):
        return self._io.seek(*args)

    def tell(self):
        return self._io.tell()


class SaysNotSeekable(SeekTellOnly):
    def seekable(self):
        return False


class Closable(ReadOnly):
    closed = False

    def close(self):
        self.closed = True


def test_iterates_in_block_size_reads():
    assert list(FileWrapper(io.BytesIO(b"abcdefg"), 3)) == [b"abc", b"def", b"g"]


def test_default_block_size():
    wrapper = FileWrapper(io.BytesIO(b"x" * 70000))
    assert wrapper.block_size == 32768
    assert [len(chunk) for chunk in wrapper] == [32768, 32768, 70000 - 65536]


def test_empty_file_yields_nothing():
    assert list(FileWrapper(io.BytesIO(b""))) == []


def test_is_its_own_iterator():
    wrapper = FileWrapper(io.BytesIO(b"ab"), 1)
    assert iter(wrapper) is wrapper
    assert next(wrapper) == b"a"


def test_attributes_for_the_server():
    f = io.BytesIO(b"data")
    wrapper = FileWrapper(f, 10)
    assert wrapper.filelike is f
    assert wrapper.file is f  # Waitress's name
    assert wrapper.block_size == 10


def test_seekable_file_exposes_its_methods():
    f = io.BytesIO(b"0123456789")
    wrapper = FileWrapper(f, 4)
    assert wrapper.seek == f.seek
    assert wrapper.tell == f.tell
    assert wrapper.seekable == f.seekable
    wrapper.seek(6)
    assert wrapper.tell() == 6
    assert list(wrapper) == [b"6789"]


def test_seek_tell_without_seekable():
    wrapper = FileWrapper(SeekTellOnly(b"abc"))
    assert hasattr(wrapper, "seek") and hasattr(wrapper, "tell")
    assert not hasattr(wrapper, "seekable")


@pytest.mark.parametrize("filelike", [ReadOnly(b"abc"), SaysNotSeekable(b"abc")])
def test_not_seekable_exposes_nothing(filelike):
    wrapper = FileWrapper(filelike, 2)
    for name in ("seek", "tell", "seekable"):
        assert not hasattr(wrapper, name)
    assert list(wrapper) == [b"ab", b"c"]


def test_close_closes_the_file():
    f = Closable(b"")
    FileWrapper(f).close()
    assert f.closed


def test_close_without_file_close():
    FileWrapper(ReadOnly(b"")).close()  # nothing to close, no error


def test_real_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello world")
    with open(path, "rb") as f:
        wrapper = FileWrapper(f, 5)
        assert wrapper.seekable() is True
        assert list(wrapper) == [b"hello", b" worl", b"d"]
        wrapper.close()
        assert f.closed


def test_waitress_name():
    assert ReadOnlyFileBasedBuffer is FileWrapper


def test_client_disconnected_is_an_exception():
    assert issubclass(ClientDisconnected, Exception)
    with pytest.raises(ClientDisconnected):
        raise ClientDisconnected("gone")
