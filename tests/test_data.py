"""train.data: ImageFolder scan and checks, seeded/sharded pipelines, the seed's transforms."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ms = pytest.importorskip("mindspore", reason="train/ needs MindSpore (Python 3.9+)")

from train import data  # noqa: E402
from train_helpers import CLASSES, CORRUPT_NAME, make_image_folder  # noqa: E402

pytestmark = pytest.mark.needs_mindspore


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("imagefolder"), per_class=6, size=80)


def test_scan_lists_sorted_classes_and_skips_the_corrupt_file_by_name(folder_root):
    reports = []
    folder = data.scan_image_folder(folder_root, report=reports.append)
    assert folder.classes == sorted(CLASSES)
    assert len(folder) == 18 and np.bincount(folder.labels).tolist() == [6, 6, 6]
    assert [b.path.name for b in folder.bad] == [CORRUPT_NAME]
    assert len(reports) == 1 and CORRUPT_NAME in reports[0] and "truncated" in reports[0]
    for path, label in zip(folder.files, folder.labels):
        assert path.parent.name == folder.classes[label]


def test_header_check_names_each_problem(tmp_path):
    good = next((make_image_folder(tmp_path / "src", per_class=1, corrupt=False) / CLASSES[0]).iterdir())
    cases = {
        "empty.jpg": b"",
        "text.jpg": b"this is not an image at all, just text" * 4,
        "truncated.jpg": good.read_bytes()[:300],
        "anim.gif": b"GIF89a" + b"\x00" * 64,
        "cut.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
    }
    expected = {"empty.jpg": "empty", "text.jpg": "not an image", "truncated.jpg": "truncated JPEG",
                "anim.gif": "unsupported format gif", "cut.png": "truncated PNG"}
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        assert expected[name] in (data.header_problem(tmp_path / name) or ""), name
    assert data.header_problem(good) is None
    assert "unreadable" in data.header_problem(tmp_path / "missing.jpg")


def test_decode_check_catches_what_the_header_check_cannot(tmp_path):
    root = make_image_folder(tmp_path, per_class=2, corrupt=False)
    # Valid start and end markers around garbage: passes the header check, cannot decode.
    (root / CLASSES[1] / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2 + b"\xff\xd9")
    assert len(data.scan_image_folder(root, check="header", report=lambda m: None)) == 7
    reports = []
    folder = data.scan_image_folder(root, check="decode", report=reports.append)
    assert len(folder) == 6 and [b.path.name for b in folder.bad] == ["garbage.jpg"]
    assert "garbage.jpg" in reports[0] and "corrupt" in reports[0]


def test_validation_folder_uses_the_training_label_order(folder_root, tmp_path):
    val = tmp_path / "val"
    (val / CLASSES[2]).mkdir(parents=True)
    src = next((folder_root / CLASSES[2]).glob("*.jpg"))
    (val / CLASSES[2] / src.name).write_bytes(src.read_bytes())
    folder = data.scan_image_folder(val, classes=list(CLASSES))
    assert folder.labels.tolist() == [2]
    (val / "unknown_class").mkdir()
    with pytest.raises(ValueError, match="unknown_class"):
        data.scan_image_folder(val, classes=list(CLASSES))


def _epoch(folder, epoch, seed=7, **kw):
    batches = data.train_dataset(folder, 4, image_size=48, resize=56, seed=seed, epoch=epoch, workers=2, **kw)
    return [(img.copy(), lab.copy()) for img, lab in batches.create_tuple_iterator(output_numpy=True, num_epochs=1)]


def test_train_pipeline_is_seeded_per_epoch(folder_root):
    folder = data.scan_image_folder(folder_root, report=lambda m: None)
    first, again, other_epoch = _epoch(folder, 0), _epoch(folder, 0), _epoch(folder, 1)
    assert len(first) == 18 // 4  # drop_remainder
    img, lab = first[0]
    assert img.shape == (4, 3, 48, 48) and img.dtype == np.float32 and lab.dtype == np.int32
    for (a, la), (b, lb) in zip(first, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    assert any(not np.array_equal(a, b) for (a, _), (b, _) in zip(first, other_epoch))
    # Normalised with ImageNet mean/std: roughly zero-centred values beyond [0, 1].
    assert img.min() < -0.5 and img.max() > 1.0


def test_shards_are_disjoint_and_cover_the_set():
    n = 17
    for shuffle in (True, False):
        shards = [data.shard_indices(n, seed=3, epoch=2, num_shards=2, shard_id=r, shuffle=shuffle) for r in (0, 1)]
        assert len(shards[0]) == len(shards[1]) == data.shard_size(n, 2) == 9
        # MindSpore pads the last shard by wrapping around: one index appears twice overall.
        assert set(shards[0]) | set(shards[1]) == set(range(n))
        assert len(set(shards[0]) & set(shards[1])) == 1
    even = [set(data.shard_indices(16, 3, 0, 2, r)) for r in (0, 1)]
    assert not even[0] & even[1] and even[0] | even[1] == set(range(16))


def test_a_file_that_fails_to_decode_at_run_time_is_replaced_not_fatal(folder_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MindSpore dumps the bad image as ./abnormal_image.jpg
    folder = data.scan_image_folder(folder_root, check="none")
    assert len(folder) == 19 and any(p.name == CORRUPT_NAME for p in folder.files)
    rows = sum(img.shape[0] for img, _ in _epoch(folder, 0, augment=False, shuffle=False))
    assert rows == (19 // 4) * 4


def test_eval_pipeline_matches_the_metadata_semantics(folder_root):
    """The eval transform IS resize semantics "mindspore": ibnedge's engine reproduces it."""
    from ibnedge.metadata import PreprocessSpec
    from ibnedge.preprocess import Preprocessor

    folder = data.scan_image_folder(folder_root, report=lambda m: None)
    batch = next(data.eval_dataset(folder, 6, image_size=64, resize=73, workers=2)
                 .create_tuple_iterator(output_numpy=True, num_epochs=1))[0]
    engine = Preprocessor(spec=PreprocessSpec(resize=73, crop=64, semantics="mindspore"), threads=1)
    result = engine.run([str(p) for p in folder.files[:6]])
    assert result.errors == [None] * 6
    assert np.abs(batch - result.tensor).max() < 1e-4
