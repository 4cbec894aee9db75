"""How the ``python -m train...`` entry points report failures (see ibnedge.errors).

Bad input is one ``error:`` line and exit 2; ``--debug`` or ``IBNEDGE_DEBUG=1`` adds the
traceback above that line; anything that is not a user error (a bug, planted here in a
real run) keeps Python's traceback and exit 1. Every case is a real process.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("mindspore", reason="train/ needs MindSpore (Python 3.9+)")

from train_helpers import REPO, run_module  # noqa: E402
from edge_helpers import subprocess_env  # noqa: E402

pytestmark = pytest.mark.needs_mindspore

# python -m NAME -> the module whose main() it runs
ENTRY_POINTS = {"train": "train.loop", "train.eval": "train.eval", "train.export": "train.export",
                "train.convert": "train.convert", "train.bench": "train.bench", "train.models": "train.models.__main__",
                "train.distributed": "train.distributed"}


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_every_entry_point_takes_debug(module, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(ENTRY_POINTS[module]).main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0 and "--debug" in out and "IBNEDGE_DEBUG=1" in out


def _user_errors(tmp_path):
    bad_pth = tmp_path / "bad.pth"
    bad_pth.write_bytes(b"not a checkpoint at all")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("a file, not a folder\n")
    return {
        "train": (["--device", "CPU", "--train-dir", tmp_path / "missing"], "missing: dataset folder not found"),
        "train.eval": (["--device", "CPU", "--checkpoint", tmp_path / "missing.ckpt", "--val-dir", tmp_path],
                       "missing.ckpt: checkpoint not found"),
        "train.export": (["--device", "CPU", "--checkpoint", tmp_path / "missing.ckpt"],
                         "missing.ckpt: checkpoint not found"),
        "train.convert": ([bad_pth, tmp_path / "out.ckpt"], "bad.pth: not a PyTorch checkpoint"),
        # A --log-dir inside a file: the operating system's refusal, naming the path.
        "train.distributed": (["--nproc", "1", "--device", "CPU", "--log-dir", not_a_dir / "logs", "--", "--epochs", "1"],
                              "Not a directory: '%s'" % (not_a_dir / "logs")),
    }


@pytest.mark.parametrize("module", ["train", "train.eval", "train.export", "train.convert", "train.distributed"])
def test_a_user_error_is_one_line_and_debug_adds_the_traceback(module, tmp_path):
    args, message = _user_errors(tmp_path)[module]
    plain = run_module(module, args, check=False)
    lines = plain.stdout.strip().splitlines()
    assert plain.returncode == 2 and "Traceback" not in plain.stdout, plain.stdout
    assert lines[-1].startswith("error: ") and message in lines[-1], plain.stdout
    debug = run_module(module, ["--debug"] + args, check=False)
    assert debug.returncode == 2 and "Traceback (most recent call last):" in debug.stdout, debug.stdout
    assert debug.stdout.strip().splitlines()[-1] == lines[-1]


def test_ibnedge_debug_in_the_environment_works_for_train_too(tmp_path):
    args, message = _user_errors(tmp_path)["train.export"]
    proc = subprocess.run([sys.executable, "-m", "train.export"] + [str(a) for a in args], cwd=str(REPO),
                          env=subprocess_env({"IBNEDGE_DEBUG": "1"}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback (most recent call last):" in proc.stdout
    assert message in proc.stdout.strip().splitlines()[-1]


_PLANTED_BUG = """
import sys
import train.loop


def planted(*args, **kwargs):
    raise {error}("planted bug")


train.loop.setup_context = planted
sys.exit(train.loop.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("error", ["ValueError", "OSError"])
def test_a_bug_keeps_its_traceback(error, tmp_path):
    """Not a user error: no one-line 'error:' that reads like bad input, but Python's traceback, exit 1."""
    proc = subprocess.run([sys.executable, "-c", _PLANTED_BUG.format(error=error), "--train-dir", str(tmp_path)],
                          cwd=str(REPO), env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout
    assert "Traceback (most recent call last):" in proc.stdout
    assert proc.stdout.strip().endswith("%s: planted bug" % error) and "error: planted bug" not in proc.stdout
