"""train.owned_dirs: temporary directories a SIGKILLed owner leaves only until the next one
starts (pure Python: runs without MindSpore, under both interpreters)."""
from __future__ import annotations

import subprocess
import sys
import tempfile

import pytest

from edge_helpers import subprocess_env
from train import owned_dirs
from train.owned_dirs import LOCK_NAME, owned_temp_dir, remove_unowned

PREFIX = "ibnedge-test-owned-"


def test_a_directory_without_a_lock_file_is_kept_and_an_unheld_one_removed(tmp_path):
    """An older launcher's directory (or one whose owner was killed before locking it)
    cannot be told from one being made: the sweep leaves it."""
    unlocked, stale = tmp_path / (PREFIX + "old"), tmp_path / (PREFIX + "stale")
    unlocked.mkdir()
    stale.mkdir()
    (stale / LOCK_NAME).write_bytes(b"")  # nobody holds it
    remove_unowned(tmp_path, PREFIX)
    assert unlocked.is_dir() and not stale.exists()


def test_a_live_owners_directory_is_kept(tmp_path, monkeypatch):
    """Another process holding its directory (here: still inside owned_temp_dir) keeps it."""
    code = ("import sys, time; from train.owned_dirs import owned_temp_dir\n"
            "with owned_temp_dir(sys.argv[1]) as d:\n    print(d, flush=True); sys.stdin.read()")
    env = subprocess_env({"TMPDIR": str(tmp_path)})
    owner = subprocess.Popen([sys.executable, "-c", code, PREFIX], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        held = owner.stdout.readline().strip()
        assert held.startswith(str(tmp_path / PREFIX)), held
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        with owned_temp_dir(PREFIX) as mine:
            assert mine.is_dir() and (tmp_path / held).is_dir()
        assert not mine.exists()
    finally:
        owner.communicate("", timeout=30)
    assert owner.returncode == 0 and not (tmp_path / held).exists()


def test_a_failure_while_locking_leaves_no_directory(tmp_path, monkeypatch):
    """Interrupted between making the directory and locking it (Ctrl-C), owned_temp_dir
    removes the directory: without a lock file no later sweep would."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def interrupted(directory):
        raise KeyboardInterrupt

    monkeypatch.setattr(owned_dirs, "_locked_lock_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with owned_temp_dir(PREFIX):
            pass
    assert list(tmp_path.glob(PREFIX + "*")) == []
