"""Broken and awkward inputs fail one item at a time, with the right kind and a clear
message, while the other items of the same batch come out exact.

Truncated-JPEG policy under test: a JPEG whose data ends before the rows the crop needs
is an error of kind ``truncated`` (libjpeg would otherwise pad it with grey).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import max_abs_diff, pil_reference, pixel_spec, reference, run_pixels, tensor_pixels

from ibnedge import corpus
from ibnedge.preprocess import Preprocessor

MODES = ("pil", "mindspore", "fast")


def _outcome(err):
    return None if err is None else err.kind


def _interleave(good, bad):
    """good[0], bad[0], bad[1], good[1], bad[2], bad[3], ... then the remaining good items."""
    items, kinds = [], []
    g = iter(good)
    for i, case in enumerate(bad):
        if i % 2 == 0:
            item = next(g, None)
            if item is not None:
                items.append(item)
                kinds.append(None)
        items.append(case)
        kinds.append(case)
    for item in g:
        items.append(item)
        kinds.append(None)
    return items, kinds


def _check_batch(items, cases, good_rows, res, as_bytes):
    """Every case's outcome acceptable, messages present, failed rows zero, good rows exact."""
    problems = []
    good_index = 0
    for i, (item, case) in enumerate(zip(items, cases)):
        err = res.errors[i]
        if case is None:  # a good photo: bitwise what a batch of only good photos gives
            if err is not None:
                problems.append("good item %d failed: %s %s" % (i, err.kind, err.message))
            elif not np.array_equal(res.tensor[i], good_rows[good_index]):
                problems.append("good item %d differs from the all-good batch" % i)
            good_index += 1
            continue
        kind = _outcome(err)
        if not case.accepts(kind):
            problems.append("%s: got %s (%s), expected %s%s" % (
                case.name, kind, err.message if err else "decoded", case.expected or "a decode",
                " or a decode" if case.may_decode else ""))
            continue
        if err is not None:
            if err.kind not in corpus.ERROR_KINDS:
                problems.append("%s: unknown error kind %r" % (case.name, err.kind))
            if not isinstance(err.message, str) or len(err.message) < 8:
                problems.append("%s: message %r says nothing" % (case.name, err.message))
            elif not as_bytes and case.path.name not in err.message:
                problems.append("%s: message %r does not name the file" % (case.name, err.message))
            if res.tensor[i].any():
                problems.append("%s: failed row is not zero-filled" % case.name)
        elif case.reference == "pillow":
            got = tensor_pixels(res.tensor[i])
            diff = max_abs_diff(got, pil_reference(case.path))
            if diff > 1:
                problems.append("%s: decoded but max |diff| %d from Pillow" % (case.name, diff))
    return problems


@pytest.mark.parametrize("semantics", MODES)
def test_one_batch_of_bad_and_good_files(semantics, bad_cases, imagenet_files):
    good = list(imagenet_files[:6])
    bad = list(bad_cases.values())
    items, cases = _interleave(good, bad)
    paths = [c.path if c is not None else it for it, c in zip(items, cases)]
    pre = Preprocessor(spec=pixel_spec(semantics), threads=2)
    good_rows = pre.run(good).tensor
    res = pre.run(paths)
    assert len(res.errors) == len(paths)
    assert res.tensor.shape == (len(paths), 3, 224, 224)
    problems = _check_batch(paths, cases, good_rows, res, as_bytes=False)
    if semantics != "pil":  # pixels of decodable cases are checked against Pillow in pil mode only
        problems = [p for p in problems if "from Pillow" not in p]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("semantics", MODES)
def test_one_batch_of_bad_and_good_bytes(semantics, bad_cases, imagenet_files):
    good = [p.read_bytes() for p in imagenet_files[6:10]]
    bad = [c for c in bad_cases.values() if c.path.is_file()]
    items, cases = _interleave(good, bad)
    data = [c.path.read_bytes() if c is not None else it for it, c in zip(items, cases)]
    pre = Preprocessor(spec=pixel_spec(semantics), threads=2)
    good_rows = pre.run(good).tensor
    res = pre.run(data)
    problems = _check_batch(data, cases, good_rows, res, as_bytes=True)
    if semantics != "pil":
        problems = [p for p in problems if "from Pillow" not in p]
    assert not problems, "\n".join(problems)


def test_errors_name_the_problem(bad_cases):
    cases = ["empty", "truncated", "huge_header", "not_image", "missing_file", "unreadable_directory"]
    res = Preprocessor(spec=pixel_spec("pil"), threads=1).run([bad_cases[n].path for n in cases])
    got = dict(zip(cases, res.errors))
    assert got["empty"].kind == "empty"
    assert got["truncated"].kind == "truncated"
    assert got["huge_header"].kind == "too_large"
    assert "65535" in got["huge_header"].message  # the claimed size, so the user sees why
    assert got["not_image"].kind == "not_image"
    assert got["missing_file"].kind == "unreadable"
    assert got["unreadable_directory"].kind == "unreadable"


def test_truncated_progressive_and_png_are_errors(bad_cases):
    progressive = bad_cases["progressive"].path.read_bytes()
    png = bad_cases["png_rgb"].path.read_bytes()
    items = [progressive[: len(progressive) // 2], png[: len(png) // 2], progressive]
    res = Preprocessor(spec=pixel_spec("pil"), threads=1).run(items)
    assert res.errors[0] is not None and res.errors[0].kind == "truncated", res.errors[0]
    assert res.errors[1] is not None and res.errors[1].kind in ("truncated", "corrupt"), res.errors[1]
    assert res.errors[2] is None


def test_a_batch_of_only_bad_items_returns_zeros(bad_cases):
    bad = [c.path for c in bad_cases.values() if not c.must_decode and not c.may_decode]
    res = Preprocessor(spec=pixel_spec("fast"), threads=2).run(bad)
    assert all(e is not None for e in res.errors)
    assert not res.tensor.any()


def test_empty_batch():
    res = Preprocessor(spec=pixel_spec("pil"), threads=1).run([])
    assert res.tensor.shape == (0, 3, 224, 224)
    assert res.errors == []


@pytest.mark.parametrize("semantics", MODES)
def test_random_damage_never_crashes(semantics, bad_cases):
    """Seeded byte flips, truncations and splices of several JPEG flavours: every item
    gets either pixels or an error of a known kind; the untouched control stays exact."""
    sources = [bad_cases[n].path.read_bytes()
               for n in ("baseline", "progressive", "cmyk", "grayscale", "restart_markers", "png_rgb")
               if n in bad_cases]
    rng = np.random.RandomState(7)
    items = []
    for i in range(60):
        data = bytearray(sources[i % len(sources)])
        how = i % 3
        if how == 0:
            for off in rng.randint(2, len(data), size=1 + i % 17):
                data[int(off)] = int(rng.randint(0, 256))
        elif how == 1:
            data = data[: int(rng.randint(2, len(data)))]
        else:
            a, b = sorted(int(v) for v in rng.randint(2, len(data), size=2))
            data = data[:a] + data[b:]
        items.append(bytes(data))
    control = bad_cases["baseline"].path.read_bytes()
    items.append(control)
    pre = Preprocessor(spec=pixel_spec(semantics), threads=2)
    res = pre.run(items)
    kinds = {e.kind for e in res.errors if e is not None}
    assert kinds <= set(corpus.ERROR_KINDS), kinds
    assert res.errors[-1] is None
    assert np.array_equal(res.tensor[-1], pre.run([control]).tensor[0])
    # The engine survives and still works after all that.
    assert pre.run([control]).errors == [None]


def test_unusual_path_names(tmp_path, imagenet_files):
    data = imagenet_files[0].read_bytes()
    names = ["with space.jpg", "ünïcødé фото.jpg", "no_extension", "UPPER.JPEG", "-starts-with-dash.jpg"]
    paths = []
    for name in names:
        p = tmp_path / name
        p.write_bytes(data)
        paths.append(p)
    rows, errors = run_pixels(paths + [str(p) for p in paths], "pil")
    assert errors == [None] * (2 * len(names))
    for got in rows[1:]:
        assert np.array_equal(got, rows[0])


def test_unencodable_paths_and_oversized_arrays_are_item_errors(imagenet_files):
    """A path the file system cannot take, a NUL inside a path (which would otherwise open
    the name before it) and an array over the pixel cap fail alone, not the batch."""
    good = str(imagenet_files[0])
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (5000, 5000, 3))
    pre = Preprocessor(threads=2, max_pixels=10_000_000)
    res = pre.run(["lone\ud800surrogate.jpg", good + "\0.png", huge, good])
    assert [e and e.kind for e in res.errors] == ["unreadable", "unreadable", "too_large", None]
    assert "cannot be encoded" in res.errors[0].message and "NUL" in res.errors[1].message
    assert "over the cap" in res.errors[2].message
    assert not res.tensor[:3].any() and res.tensor[3].any()


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc to read the resident size")
def test_failing_items_do_not_leak(bad_cases, imagenet_files):
    """Hundreds of failed decodes (every error path) leave the resident size flat.

    A coarse guard from Python (allocator noise needs the 16 MiB slack, so a leak under
    about 10 KB per failed item passes here); byte-exact leak detection of the same error
    paths is tests/memcheck.sh's LeakSanitizer stage."""
    bad = [c for c in bad_cases.values() if not c.must_decode]
    items = [c.path for c in bad] + [c.path.read_bytes() for c in bad if c.path.is_file()] + list(imagenet_files[:2])
    pre = Preprocessor(spec=pixel_spec("pil"), threads=2)
    out = np.empty((len(items), 3, 224, 224), np.float32)
    for _ in range(5):  # warm-up: allocator pools, OpenCV and libjpeg first-use state
        pre.run(items, out=out)
    before = _resident_bytes()
    for _ in range(40):
        pre.run(items, out=out)
    growth = _resident_bytes() - before
    failures = 40 * sum(1 for e in pre.run(items, out=out).errors if e is not None)
    assert growth < 16 * 2 ** 20, "resident size grew %.1f MB over %d failed items" % (growth / 2 ** 20, failures)


# --------------------------------------------------------------------------- sizes


def _constant_array(height: int, width: int, value: int = 200) -> np.ndarray:
    """An HWC uint8 array of one colour; a zero-stride view when large (no memory)."""
    return np.broadcast_to(np.full((1, 1, 3), value, np.uint8), (height, width, 3))


@pytest.mark.parametrize("semantics", MODES)
def test_a_resized_side_over_the_limit_is_too_large(semantics, imagenet_files):
    """1x131072 with resize 16384 would be 2147483648 pixels long: more than an int holds.
    It is refused, naming the sizes and the fix, instead of overflowing into an all-padding
    tensor reported as fine; 1x65536 (exactly 2**30 long) is computed, exactly."""
    wide, tall = np.full((1, 131072, 3), 200, np.uint8), np.full((131072, 1, 3), 200, np.uint8)
    at_limit = np.full((1, 65536, 3), 200, np.uint8)
    items = [wide, str(imagenet_files[0]), tall, at_limit]
    rows, errors = run_pixels(items, semantics, resize=16384, crop=(4, 8))
    assert [e and e.kind for e in errors] == ["too_large", None, "too_large", None], errors
    assert "131072x1" in errors[0].message and "1x131072" in errors[2].message
    for err in (errors[0], errors[2]):
        assert "2147483648" in err.message and "16384" in err.message and "lower resize" in err.message, err
    assert np.all(rows[3] == 200)


@pytest.mark.parametrize("semantics", ("pil", "fast"))
def test_a_downscale_beyond_the_filter_limit_is_too_large(semantics):
    """A 2**30 x 2**30 (zero-stride) array with resize 1: the antialiasing filter of one
    output would span 2**31 taps. Refused with the factor named, not an internal error."""
    huge = _constant_array(2 ** 30, 2 ** 30)
    rows, errors = run_pixels([huge, _constant_array(40, 30)], semantics, resize=1, crop=1, max_pixels=2 ** 62)
    assert errors[0] is not None and errors[0].kind == "too_large", errors
    assert "1073741824" in errors[0].message and "raise resize" in errors[0].message, errors[0]
    assert errors[1] is None and np.all(rows[1] == 200)


def test_an_array_side_beyond_the_engine_is_an_item_error():
    """A side over 2**30 cannot be indexed by the engine: that item is too_large; it does not
    fail the whole batch (whatever max_pixels says)."""
    for max_pixels in (None, 2 ** 62):
        options = {} if max_pixels is None else {"max_pixels": max_pixels}
        rows, errors = run_pixels([_constant_array(1, 2 ** 30 + 1), _constant_array(50, 60)], "pil", **options)
        assert errors[0] is not None and errors[0].kind == "too_large", errors
        assert "1073741825" in errors[0].message, errors[0]
        assert errors[1] is None and np.all(rows[1] == 200)


@pytest.mark.parametrize("semantics", ("pil", "mindspore"))
def test_resize_1_matches_the_reference(semantics):
    """The smallest resize: every image becomes a pixel or a thin line, padded to the crop
    (3: MindSpore refuses crops of 4x the image and more)."""
    items = [corpus.photo(500, 375, index=1), corpus.photo(80, 1000, index=2), corpus.photo(3, 2, index=3)]
    rows, errors = run_pixels(items, semantics, resize=1, crop=3)
    assert errors == [None] * len(items)
    for item, got in zip(items, rows):
        assert max_abs_diff(got, reference(semantics, item, 1, 3)) <= 1


# --------------------------------------------------------------------------- memory bounds


def test_decoding_memory_is_bounded_by_the_budget(bad_cases):
    """A tiny progressive file whose header claims a frame under the pixel cap but whose
    coefficient buffers exceed 4 bytes per pixel of max_pixels is refused before libjpeg
    allocates them; more than 500 scans (libjpeg-turbo's own limit) is refused too."""
    bomb, many, limit = (bad_cases[n].path for n in ("progressive_bomb", "scans_501", "scans_500"))
    assert bomb.stat().st_size < 4096
    res = Preprocessor(spec=pixel_spec("pil"), threads=1).run([bomb, many, limit])
    assert [e and e.kind for e in res.errors] == ["too_large", "too_large", None], res.errors
    assert "memory budget" in res.errors[0].message and "--max-pixels" in res.errors[0].message
    assert "more than 500 scans" in res.errors[1].message
    # The budget follows the pixel cap: at twice the cap the buffers fit (the 16x16 data then
    # runs out of the claimed frame: damaged).
    roomy = Preprocessor(spec=pixel_spec("pil"), threads=1, max_pixels=2 * 178956970).run([bomb])
    assert roomy.errors[0].kind in ("corrupt", "truncated"), roomy.errors[0]


def test_a_jpeg_file_over_the_memory_budget_is_refused_unread(tmp_path, imagenet_files):
    """The file's size is checked before it is read (a sparse file of 6 MB holding a small
    JPEG, with a budget of 4 MB), and bytes over the budget are refused the same way."""
    data = imagenet_files[0].read_bytes()
    big = tmp_path / "sparse.jpg"
    with open(str(big), "wb") as f:
        f.write(data)
        f.truncate(6 * 2 ** 20)
    pre = Preprocessor(spec=pixel_spec("pil"), threads=1, max_pixels=2 ** 20)
    res = pre.run([big, data + bytes(6 * 2 ** 20 - len(data)), data])
    assert [e and e.kind for e in res.errors] == ["too_large", "too_large", None], res.errors
    assert "6291456 bytes" in res.errors[0].message and "memory budget" in res.errors[0].message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a POSIX named pipe")
def test_a_header_over_the_pixel_cap_is_refused_before_the_file_is_read(tmp_path, bad_cases):
    """A pipe whose writer sends a header claiming 65535x65535 and then stalls: the engine
    answers from the header instead of waiting for the end of the file."""
    import threading

    fifo = str(tmp_path / "stalled.jpg")
    os.mkfifo(fifo)
    header = bad_cases["huge_header"].path.read_bytes()
    header = header[: header.find(b"\xff\xda")]
    result = []
    reader = threading.Thread(target=lambda: result.append(Preprocessor(threads=1).run([fifo]).errors[0]), daemon=True)
    reader.start()
    writer = os.open(fifo, os.O_WRONLY)
    try:
        os.write(writer, header)
        reader.join(timeout=30)
        answered = not reader.is_alive()
    finally:
        os.close(writer)
        reader.join(timeout=30)
    assert answered, "the engine waited for the rest of the file instead of probing its header"
    assert result[0] is not None and result[0].kind == "too_large" and "65535" in result[0].message, result


def _rotated_progressive(width: int, height: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    return corpus.encode_jpeg(corpus.photo(width, height, index=2), quality=90, progressive=True,
                              exif=exif.tobytes())


def test_an_exif_rotated_window_counts_towards_the_memory_budget():
    """Rotated, the crop's window is decoded whole (4 bytes a pixel) beside the progressive
    file's coefficients (3 bytes a pixel at 4:2:0): over 4 bytes per pixel of max_pixels it
    is too_large. Unrotated, the same file streams through in strips; with twice the cap the
    rotated decode fits."""
    data = _rotated_progressive(1000, 800)
    cap = 1000 * 800 + 1
    rotated = Preprocessor(spec=pixel_spec("pil"), threads=1, max_pixels=cap, exif_orientation=True).run([data])
    assert rotated.errors[0] is not None and rotated.errors[0].kind == "too_large", rotated.errors[0]
    assert "EXIF-rotated" in rotated.errors[0].message and "memory budget" in rotated.errors[0].message
    assert Preprocessor(spec=pixel_spec("pil"), threads=1, max_pixels=cap).run([data]).errors == [None]
    roomy = Preprocessor(spec=pixel_spec("pil"), threads=1, max_pixels=2 * cap, exif_orientation=True).run([data])
    assert roomy.errors == [None]


# --------------------------------------------------------------------------- reads stay inside the array

# Run in a subprocess: the read past the array faults. An RGBA array ending exactly at a
# page made inaccessible (mprotect), viewed as its last three channels ([:, :, 1:4]: 4 bytes
# between pixels, 3 channels): the bytes after the view's last pixel are the guard page.
_GUARDED_VIEW = r"""
import ctypes, mmap, sys
import numpy as np
from ibnedge.metadata import PreprocessSpec
from ibnedge.preprocess import Preprocessor
height, width = 64, 64  # square: the crop reads every row and column
size = height * width * 4
assert size % mmap.PAGESIZE == 0
memory = mmap.mmap(-1, size + mmap.PAGESIZE)
address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
libc = ctypes.CDLL(None, use_errno=True)
if libc.mprotect(ctypes.c_void_p(address + size), ctypes.c_size_t(mmap.PAGESIZE), 0) != 0:
    sys.exit("mprotect failed: errno %d" % ctypes.get_errno())
rgba = np.frombuffer(memory, np.uint8, count=size).reshape(height, width, 4)
rgba[...] = np.random.RandomState(0).randint(0, 256, rgba.shape)
view = rgba[:, :, 1:4]
spec = PreprocessSpec(semantics=sys.argv[1], resize=32, crop=32)
got = Preprocessor(spec=spec, threads=1).run([view])
want = Preprocessor(spec=spec, threads=1).run([np.ascontiguousarray(view)])
if got.errors != [None] or not np.array_equal(got.tensor, want.tensor):
    sys.exit("the view gave %r, another tensor than its copy" % got.errors)
print("ok")
"""


@pytest.mark.parametrize("semantics", MODES)
def test_a_strided_view_is_read_only_inside_its_pixels(semantics):
    """A 3-channel view with 4 bytes between pixels (an RGBA array's [:, :, 1:4]) whose last
    pixel ends where the memory does: the engine reads its 3 channels, not a 4th byte past
    the end (the copy of each row read 4 bytes a pixel, one beyond the array's last byte)."""
    from edge_helpers import subprocess_env
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _GUARDED_VIEW, semantics], capture_output=True, text=True,
                          timeout=120, env=subprocess_env())
    assert done.returncode == 0 and done.stdout.strip() == "ok", (
        "exit status %d (negative: killed by that signal)\n%s" % (done.returncode, done.stderr[-2000:]))
