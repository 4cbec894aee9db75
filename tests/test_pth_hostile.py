"""Hostile ``.pth`` files: small files that describe huge tensors, compressed or lying records,
pickles built to exhaust memory or time. None of them runs code (the unpickler's allow-list
holds); each must end ``python -m train.convert`` with one ``error:`` line naming the file,
inside a 600 MB address-space limit and a CPU-time limit, with a small peak RSS.

Every file is crafted here without PyTorch: the pickles are written by a pure-Python
pickler that emits torch.save's globals and persistent ids (``("storage", torch.XStorage,
key, location, numel)``, plus a view field in the legacy format), in torch.save's layouts.
"""
from __future__ import annotations

import io
import pickle
import resource
import struct
import subprocess
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pytest

from edge_helpers import REPO, subprocess_env
from train_helpers import module_then_command
from ibnedge.pth_reader import (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, MAX_PICKLE_BYTES, PthError,
                              UnsafePickleError, load_pth, load_state_dict)

ADDRESS_SPACE_LIMIT = 600 << 20  # the child's whole virtual memory: a large allocation fails at once
CPU_SECONDS_LIMIT = 60  # a reader stuck in exponential work is killed (SIGXCPU), not waited for
# Measured: 38-47 MB (the interpreter and NumPy) for most cases; 96 MB (Python 3.11) and 187 MB
# (3.7, whose empty dicts are 4x larger) for the legacy pickle parsed up to MAX_PICKLE_BYTES.
PEAK_RSS_LIMIT = 300 << 20


# --------------------------------------------------------------------------- crafting torch.save files


class Global:
    """A module-level name, pickled as the GLOBAL opcode (no module needs to be importable)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> Any:  # save_reduce wants a callable; never called here
        raise NotImplementedError


REBUILD_TENSOR = Global("torch._utils", "_rebuild_tensor_v2")


class Storage:
    """A storage the pickle refers to by persistent id."""

    def __init__(self, key: str, numel: int, type_name: str = "FloatStorage") -> None:
        self.key, self.numel, self.type_name = key, numel, type_name


class Tensor:
    """``_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``, as torch pickles a tensor."""

    def __init__(self, storage: Storage, size: Sequence[int], stride: Sequence[int], offset: int = 0) -> None:
        self.args = (storage, offset, tuple(size), tuple(stride), False, OrderedDict())

    def __reduce__(self):
        return REBUILD_TENSOR, self.args


class _TorchPickler(pickle._Pickler):  # pure Python, so that its dispatch table can hold Global
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, stream: io.BytesIO, legacy: bool) -> None:
        super().__init__(stream, protocol=2)
        self.legacy = legacy

    def save_global_name(self, obj: Global) -> None:
        self.write(pickle.GLOBAL + ("%s\n%s\n" % (obj.module, obj.name)).encode("ascii"))
        self.memoize(obj)

    dispatch[Global] = save_global_name

    def persistent_id(self, obj: Any) -> Optional[tuple]:
        if not isinstance(obj, Storage):
            return None
        pid = ("storage", Global("torch", obj.type_name), obj.key, "cpu", obj.numel)
        return pid + (None,) if self.legacy else pid


def torch_pickle(obj: Any, legacy: bool = False) -> bytes:
    stream = io.BytesIO()
    _TorchPickler(stream, legacy).dump(obj)
    return stream.getvalue()


class Record(NamedTuple):
    name: str
    payload: bytes
    method: int = 0  # 0 stored, 8 deflate
    crc: Optional[int] = None  # of the uncompressed bytes (default: of payload)
    size: Optional[int] = None  # uncompressed size (default: len(payload))
    flags: int = 0
    stored_size: Optional[int] = None  # the compressed size field (default: len(payload))


def zip_bytes(records: Sequence[Record]) -> bytes:
    """A zip archive written field by field, so that a record may say what zipfile would not write."""
    out, central = bytearray(), bytearray()
    for r in records:
        name = r.name.encode()
        crc = zlib.crc32(r.payload) if r.crc is None else r.crc
        size = len(r.payload) if r.size is None else r.size
        stored = len(r.payload) if r.stored_size is None else r.stored_size
        offset = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, r.flags, r.method, 0, 0, crc, stored, size,
                           len(name), 0) + name + r.payload
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, r.flags, r.method, 0, 0, crc, stored,
                               size, len(name), 0, 0, 0, 0, 0, offset) + name
    directory_offset = len(out)
    out += central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(records), len(records), len(central),
                                 directory_offset, 0)
    return bytes(out)


def torch_zip(obj_or_pickle: Any, storages: Dict[str, bytes], extra: Sequence[Record] = ()) -> bytes:
    """torch.save's zip layout: archive/data.pkl, archive/byteorder, archive/data/<key>."""
    pickled = obj_or_pickle if isinstance(obj_or_pickle, bytes) else torch_pickle(obj_or_pickle)
    records = [Record("archive/data.pkl", pickled), Record("archive/byteorder", b"little")]
    records += [Record("archive/data/%s" % key, data) for key, data in storages.items()]
    return zip_bytes(records + list(extra))


def torch_legacy(obj_or_pickle: Any, storages: Sequence[Tuple[str, int, bytes]]) -> bytes:
    """The legacy stream: magic, protocol, sys info, object, keys, then (int64 numel, bytes) per storage."""
    head = b"".join(pickle.dumps(x, protocol=2) for x in (
        LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION,
        {"protocol_version": LEGACY_PROTOCOL_VERSION, "little_endian": True,
         "type_sizes": {"short": 2, "int": 4, "long": 8}}))
    pickled = obj_or_pickle if isinstance(obj_or_pickle, bytes) else torch_pickle(obj_or_pickle, legacy=True)
    body = pickled + pickle.dumps([key for key, _, _ in storages], protocol=2)
    return head + body + b"".join(struct.pack("<q", numel) + data for _, numel, data in storages)


def floats(n: int) -> bytes:
    return np.arange(n, dtype="<f4").tobytes()


def deflated_zeros(total: int, chunk: int = 16 << 20) -> Tuple[bytes, int]:
    """A raw DEFLATE stream of ``total`` zero bytes and its CRC-32, without compressing all of
    it: after a full flush the compressor starts afresh, so every chunk compresses alike."""
    zeros = bytes(chunk)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(total // chunk):
        crc = zlib.crc32(zeros, crc)
    return block * (total // chunk) + compressor.flush(), crc


def nested_lists(depth: int) -> bytes:
    """[[[...]]] ``depth`` deep, as opcodes (a pickler would recurse that deep itself)."""
    return b"\x80\x02" + pickle.EMPTY_LIST * depth + pickle.APPEND * (depth - 1) + pickle.STOP


def shared_doubling(depth: int) -> Any:
    """L0 = [t]; L(k+1) = [Lk, Lk]: ``depth`` levels of references, 2**depth leaves if expanded."""
    level: Any = [Tensor(Storage("0", 4), (4,), (1,))]
    for _ in range(depth):
        level = [level, level]
    return {"weights": level}


# --------------------------------------------------------------------------- the cases

ONE = Storage("0", 1)
SIXTEEN = Storage("0", 16)


def _huge_pickle() -> bytes:
    pairs = 10 << 20  # 20 MiB: {} appended to a list makes ~36 bytes of objects per 2 bytes of pickle
    return b"\x80\x02" + pickle.EMPTY_LIST + (pickle.EMPTY_DICT + pickle.APPEND) * pairs + pickle.STOP


def _many_transposed_views() -> bytes:
    square = Storage("0", 512 * 512)
    views = {"view%d" % i: Tensor(square, (512, 512), (1, 512)) for i in range(800)}  # 800 copies of 1 MiB
    return torch_zip(views, {"0": floats(512 * 512)})


def _deflate_bomb() -> bytes:
    stream, crc = deflated_zeros(1 << 30)
    return torch_zip({"w": Tensor(ONE, (1,), (1,))}, {},
                     extra=[Record("archive/data/0", stream, method=8, crc=crc, size=1 << 30)])


def _build_on_a_global() -> bytes:
    # torch.FloatStorage.__dict__.update({"dtype": 5}): would rewrite the reader's own type table
    build = b"\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeK\x05sb0"
    return torch_zip(build + torch_pickle({"w": Tensor(ONE, (1,), (1,))})[2:], {"0": floats(1)})


HOSTILE: Dict[str, Tuple[Callable[[], bytes], str, List[str]]] = {
    # name: (file bytes, what the error says, extra CLI arguments)
    "zip 20000x20000 stride 0": (
        lambda: torch_zip({"w": Tensor(ONE, (20000, 20000), (0, 0))}, {"0": floats(1)}),
        "more elements than its storage holds", []),
    "zip 10^6x10^6 stride 0": (
        lambda: torch_zip({"w": Tensor(ONE, (10**6, 10**6), (0, 0))}, {"0": floats(1)}),
        "more elements than its storage holds", []),
    "zip negative size": (
        lambda: torch_zip({"w": Tensor(SIXTEEN, (-1, 4), (4, 1))}, {"0": floats(16)}),
        "negative offset, size or stride", []),
    "zip negative stride": (
        lambda: torch_zip({"w": Tensor(SIXTEEN, (4, 4), (-4, 1), offset=12)}, {"0": floats(16)}),
        "negative offset, size or stride", []),
    "zip huge offset": (
        lambda: torch_zip({"w": Tensor(SIXTEEN, (4,), (1,), offset=2**70)}, {"0": floats(16)}),
        "past the end of its storage", []),
    "zip storage larger than its record": (
        lambda: torch_zip({"w": Tensor(Storage("0", 10**9), (4,), (1,))}, {"0": floats(1)}),
        "holds 4 bytes but its storage needs 4000000000", []),
    "zip record claims bytes past the end of the file": (
        lambda: torch_zip({"w": Tensor(Storage("0", 2**29), (4,), (1,))}, {},
                          extra=[Record("archive/data/0", floats(4), size=2**31, stored_size=2**31)]),
        "past the end of the", []),
    "zip deflated record of 1 GiB": (_deflate_bomb, "is compressed", []),
    "zip encrypted record": (
        lambda: zip_bytes([Record("archive/data.pkl", torch_pickle({}), flags=1)]), "encrypted", []),
    "zip 800 transposed views of one storage": (_many_transposed_views, "times the 262144 elements", []),
    "zip pickle longer than the limit": (
        lambda: torch_zip(_huge_pickle(), {}), "more than the %d" % MAX_PICKLE_BYTES, []),
    "zip lists nested 100000 deep": (lambda: torch_zip(nested_lists(100000), {}), "nested more than", []),
    "zip list that contains itself": (
        lambda: torch_zip(b"\x80\x02]q\x00h\x00a.", {}), "or one that contains itself", []),
    "zip 2^28 shared references": (
        lambda: torch_zip(shared_doubling(28), {"0": floats(4)}), "entries that are not tensors: weights", []),
    "zip memo index 2^28": (  # the C unpickler would allocate and clear a 4 GB memo table
        lambda: torch_zip(b"\x80\x02]r" + struct.pack("<I", 2**28) + b".", {}), "no state_dict found", []),
    "zip BINBYTES8 of 2^40 bytes": (
        lambda: torch_zip(b"\x80\x02\x8e" + struct.pack("<Q", 2**40) + b"x.", {}), "truncated or corrupt pickle", []),
    "zip BYTEARRAY8 of 2^33 bytes": (
        lambda: torch_zip(b"\x80\x02\x96" + struct.pack("<Q", 2**33) + b"x.", {}), "protocol-5 buffers", []),
    "zip BUILD on an allowed global": (_build_on_a_global, "sets the state of a _StorageType", []),
    "zip key with a newline": (
        lambda: torch_zip({"conv1.weight\nerror: forged": Tensor(SIXTEEN, (16,), (1,))}, {"0": floats(16)}),
        "not printable strings: 'conv1.weight\\nerror: forged'", ["--arch", "resnet_ibn_a_tiny"]),
    "legacy storage of 2^50 elements": (
        lambda: torch_legacy({"w": Tensor(Storage("0", 2**50), (4,), (1,))}, [("0", 2**50, floats(4))]),
        "needs 4503599627370496 bytes, 16 are left", []),
    "legacy pickle longer than the limit": (
        lambda: torch_legacy(_huge_pickle(), []),
        "longer than the %d bytes" % MAX_PICKLE_BYTES, []),
}


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS_LIMIT, CPU_SECONDS_LIMIT))


# The child's own peak RSS: rusage cannot tell it apart, as Linux carries the forking pytest's
# high-water mark across exec into the child's ru_maxrss.
REPORT_PEAK_RSS = """
import os
with open("/proc/self/status") as status, open(os.environ["PEAK_RSS_FILE"], "w") as out:
    out.write(next(line for line in status if line.startswith("VmHWM:")).split()[1])
"""


def run_limited(module: str, args: Sequence[str], workdir: Path) -> Tuple[int, str, str, int]:
    """``python -m module args`` under the limits: (exit status, stdout, stderr, peak RSS in bytes)."""
    peak_file = workdir / "peak_rss_kb"
    out = subprocess.run(module_then_command(module, args, REPORT_PEAK_RSS), cwd=str(REPO),
                         env=subprocess_env({"PEAK_RSS_FILE": str(peak_file)}), capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, preexec_fn=_limits, timeout=10 * CPU_SECONDS_LIMIT)
    return out.returncode, out.stdout, out.stderr, int(peak_file.read_text()) * 1024


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_convert_refuses_hostile_file_in_bounded_memory(case, tmp_path, record_property):
    build, message, extra_args = HOSTILE[case]
    pth = tmp_path / "hostile.pth"
    pth.write_bytes(build())
    status, stdout, stderr, peak_rss = run_limited("train.convert", [str(pth), str(tmp_path / "out.ckpt")] + extra_args,
                                                   tmp_path)
    record_property("peak_rss_mb", peak_rss >> 20)
    lines = stderr.splitlines()
    assert status == 2 and len(lines) == 1, (status, stderr[-3000:])  # a user error: exit 2, one line
    assert lines[0].startswith("error: %s: " % pth) and message in lines[0], lines[0]
    assert stdout == "" and not (tmp_path / "out.ckpt").exists()
    assert peak_rss < PEAK_RSS_LIMIT, "%s: peak RSS %d MB" % (case, peak_rss >> 20)


def test_a_tensor_referenced_many_times_is_read_once(tmp_path):
    """torch.save pickles one tensor object once and refers back to it; so does a tied weight."""
    square = Storage("0", 512 * 512)
    shared = Tensor(square, (512, 512), (1, 512))  # transposed: materialising copies 1 MiB
    state = OrderedDict(("alias%d" % i, shared) for i in range(1000))
    state["tied"] = Tensor(square, (512, 512), (512, 1))  # a second tensor object on the same storage
    pth = tmp_path / "aliases.pth"
    pth.write_bytes(torch_zip(state, {"0": floats(512 * 512)}))
    loaded = load_pth(pth)
    expected = np.arange(512 * 512, dtype=np.float32).reshape(512, 512)
    assert all(loaded["alias%d" % i] is loaded["alias0"] for i in range(1000))
    np.testing.assert_array_equal(loaded["alias0"], expected.T)
    np.testing.assert_array_equal(loaded["tied"], expected)


def test_a_pickle_cannot_rewrite_the_readers_type_table(tmp_path):
    evil, good = tmp_path / "evil.pth", tmp_path / "good.pth"
    evil.write_bytes(_build_on_a_global())
    good.write_bytes(torch_zip({"w": Tensor(SIXTEEN, (4, 4), (4, 1))}, {"0": floats(16)}))
    with pytest.raises(UnsafePickleError, match="sets the state of a _StorageType"):
        load_pth(evil)
    np.testing.assert_array_equal(load_pth(good)["w"], np.arange(16, dtype=np.float32).reshape(4, 4))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_crafted_files_read_like_torch_save_files(tmp_path, legacy):
    """The crafting above is faithful: an honest crafted file reads back exactly (the hostile
    cases differ from it only in what they claim)."""
    storage = Storage("0", 24)
    state = {"a": Tensor(storage, (2, 3), (3, 1)), "b": Tensor(storage, (3, 2), (1, 3), offset=6),
             "half": Tensor(Storage("1", 4, "HalfStorage"), (4,), (1,))}
    raw = {"0": floats(24), "1": np.arange(4, dtype="<f2").tobytes()}
    pth = tmp_path / "honest.pth"
    if legacy:
        pth.write_bytes(torch_legacy(state, [("0", 24, raw["0"]), ("1", 4, raw["1"])]))
    else:
        pth.write_bytes(torch_zip(state, raw))
    loaded = load_pth(pth)
    base = np.arange(24, dtype=np.float32)
    np.testing.assert_array_equal(loaded["a"], base[:6].reshape(2, 3))
    np.testing.assert_array_equal(loaded["b"], base[6:12].reshape(2, 3).T)
    assert loaded["half"].dtype == np.float16 and loaded["half"].tolist() == [0, 1, 2, 3]


def test_error_messages_stay_on_one_line(tmp_path):
    pth = tmp_path / "evil.pth"
    pth.write_bytes(b"\x80\x02cos\nsystem\x0bsecond line\n.")  # a global name with a vertical tab
    with pytest.raises(PthError) as info:
        load_pth(pth)
    assert len(str(info.value).splitlines()) == 1, str(info.value)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_mutated_files_load_or_raise_one_line_pth_errors(tmp_path, legacy):
    """Random byte flips, deletions and insertions in an honest file (seeded): every result is
    a load or a one-line PthError, never another exception."""
    storage = Storage("0", 24)
    state = OrderedDict([("a", Tensor(storage, (2, 3), (3, 1))), ("b", Tensor(storage, (3, 2), (1, 3), offset=6)),
                         ("bf16", Tensor(Storage("1", 4, "BFloat16Storage"), (4,), (1,)))])
    raw = {"0": floats(24), "1": np.arange(4, dtype="<u2").tobytes()}
    honest = torch_legacy(state, [("0", 24, raw["0"]), ("1", 4, raw["1"])]) if legacy else torch_zip(state, raw)
    rng = np.random.default_rng(1)
    path = tmp_path / "mutated.pth"
    for _ in range(400):
        data = bytearray(honest)
        for _ in range(int(rng.integers(1, 5))):
            pos, kind = int(rng.integers(len(data))), rng.random()
            if kind < 0.6:
                data[pos] = int(rng.integers(256))
            elif kind < 0.8:
                del data[pos : pos + int(rng.integers(1, 17))]
            else:
                data[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        path.write_bytes(bytes(data))
        try:
            load_state_dict(path)
        except PthError as exc:
            assert len(str(exc).splitlines()) == 1 and str(exc).startswith(str(path)), str(exc)
