"""The bundle format: what pack() writes, Reader rebuilds, whatever the chunking; unsafe or oversized
bundles are refused."""
from check import raises
from firmware.link.bundle import MAGIC, MAX_FILES, Reader, check_name, pack

FILES = [("firmware/__init__.py", b""), ("firmware/app.py", b"import sys\n" * 50),
         ("hal/board.py", bytes(range(256)) * 3), ("firmware/version.py", b'VERSION = "2.0"\n')]


class Collect:
    """Sink keeping every file in memory, checking the call order."""

    def __init__(self):
        self.files = []
        self.open = None

    def begin(self, name, size):
        if self.open is not None:
            raise AssertionError("begin() while %s is open" % self.open[0])
        self.open = (name, size, bytearray())

    def write(self, mv):
        self.open[2].extend(mv)

    def end(self):
        name, size, data = self.open
        if len(data) != size:
            raise AssertionError("%s: %d bytes written, %d declared" % (name, len(data), size))
        self.files.append((name, bytes(data)))
        self.open = None


def _read(blob, step, max_total=1 << 20, **kw):
    sink = Collect()
    r = Reader(sink, max_total, **kw)
    for i in range(0, len(blob), step):
        r.feed(blob[i:i + step])
    r.finish()
    return sink.files


def _raw(names_data, count=None):
    """A bundle written by hand, bypassing pack()'s checks (what an attacker could send)."""
    out = bytearray(MAGIC + bytes((1, 0, len(names_data) if count is None else count)))
    for name, data in names_data:
        out += bytes((len(name),)) + name + len(data).to_bytes(4, "big") + data
    return bytes(out)


def test_round_trip_keeps_names_data_and_order():
    blob = pack(FILES)
    assert blob[:4] == MAGIC
    assert _read(blob, len(blob)) == FILES


def test_any_chunking_gives_the_same_files():
    blob = pack(FILES)
    for step in (1, 2, 3, 5, 7, 64, 255, 256, 1000):
        assert _read(blob, step) == FILES, step


def test_irregular_chunk_boundaries():
    blob = pack(FILES)
    sink = Collect()
    r = Reader(sink, 1 << 20)
    i = 0
    seed = 12345
    while i < len(blob):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        n = seed % 97
        r.feed(memoryview(blob)[i:i + n])   # zero-length chunks included
        i += n
    r.finish()
    assert sink.files == FILES


def test_file_boundary_split_inside_every_field():
    blob = pack(FILES)
    for cut in range(len(blob) - 1):
        sink = Collect()
        r = Reader(sink, 1 << 20)
        r.feed(blob[:cut])
        r.feed(blob[cut:])
        r.finish()
        if sink.files != FILES:
            raise AssertionError("split at %d" % cut)


def test_unsafe_names_are_refused():
    for bad in ("../boot.py", "/firmware/app.py", "firmware/../boot.py", "firmware//app.py", "firmware/./app.py",
                "firmware/", "", "firmware\\app.py", "firmware/a p.py", "firmware/\u00e9.py", "boot.py",
                "lib/urequests.py", "x" * 97):
        raises(ValueError, check_name, bad)
        raises(ValueError, pack, [(bad, b"x")])
    assert check_name("hal/atm90e32.py") == "hal/atm90e32.py"
    assert check_name("lib/x.py", roots=("lib",)) == "lib/x.py"


def test_reader_refuses_an_unsafe_name_before_writing_anything():
    for name in (b"../boot.py", b"/etc/passwd", b"firmware/../../x", b"main.py", b"firmware/\xff.py"):
        sink = Collect()
        e = raises(ValueError, Reader(sink, 1 << 20).feed, _raw([(name, b"evil")]))
        assert "file name" in str(e), str(e)
        assert sink.files == [] and sink.open is None


def test_caps_on_files_and_total_size():
    raises(ValueError, pack, [("firmware/m%d.py" % i, b"") for i in range(MAX_FILES + 1)])
    blob = pack([("firmware/a.py", b"a" * 600), ("firmware/b.py", b"b" * 600)])
    e = raises(ValueError, _read, blob, 100, max_total=1000)
    assert "exceed 1000 bytes" in str(e)
    assert len(_read(blob, 100, max_total=1200)) == 2
    e = raises(ValueError, _read, blob, 100, max_files=1)
    assert "1..1 files" in str(e)
    e = raises(ValueError, Reader(Collect(), 1 << 20).feed, _raw([], count=0))
    assert "1..%d files" % MAX_FILES in str(e)


def test_a_huge_declared_size_is_refused_before_any_data():
    sink = Collect()
    blob = MAGIC + bytes((1, 0, 1)) + bytes((13,)) + b"firmware/a.py" + b"\xff\xff\xff\xff"
    raises(ValueError, Reader(sink, 1 << 20).feed, blob)
    assert sink.open is None


def test_bad_magic_format_and_trailing_data():
    blob = pack(FILES)
    e = raises(ValueError, _read, b"ZIP!" + blob[4:], 10)
    assert "magic" in str(e)
    e = raises(ValueError, _read, blob[:4] + b"\x02" + blob[5:], 10)
    assert "format 2" in str(e)
    e = raises(ValueError, _read, blob + b"\x00", 10)
    assert "after the last file" in str(e)


def test_truncated_bundle_fails_at_finish():
    blob = pack(FILES)
    for cut in (3, 7, 30, len(blob) - 1):
        sink = Collect()
        r = Reader(sink, 1 << 20)
        r.feed(blob[:cut])
        e = raises(ValueError, r.finish)
        assert "truncated" in str(e)
        assert r.done < len(FILES)
