"""Command-line and config-file settings shared by ``python -m train``, ``train.eval`` and ``train.export``.

Precedence: built-in defaults (the MindSpore ModelZoo seed's) < ``--config FILE`` (YAML
``.yaml``/``.yml`` or TOML ``.toml``; keys are the long option names, with ``-`` or ``_``)
< flags given on the command line. One argparse definition per option, grouped so each
command takes exactly the groups it uses.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from ibnedge import cpu_isa
from ibnedge.choices import SEMANTICS
from ibnedge.errors import UserError

from .checkpoint import LATEST
from .schedule import SCHEDULES

DEVICES = ("CPU", "GPU", "Ascend")
AMP_LEVELS = ("auto", "O0", "O1", "O2", "O3")
EXPORT_FORMATS = ("MINDIR", "ONNX", "AIR")

# The seed's settings (MindSpore ModelZoo research/cv/ibnnet): batch 64 per device,
# SGD momentum 0.9, weight decay 1e-4, lr 0.1 per 256 images, x0.1 at 30/60/90 of 100 epochs.
DEFAULTS: Dict[str, Any] = {
    "config": None,
    "debug": False,
    "device": None,  # None: MindSpore's own choice for this installation
    "mode": "graph",
    "seed": 1,
    "arch": "resnet50_ibn_a",
    "num_classes": None,  # None: the number of class folders (train), the checkpoint's (eval/export)
    "image_size": 224,
    "resize": 256,
    "batch_size": 64,
    "workers": 4,
    "check_images": "header",
    # training
    "train_dir": None,
    "val_dir": None,
    "output_dir": "runs/train",
    "epochs": 100,
    "lr": None,  # None: base_lr x global batch / lr_base_batch
    "base_lr": 0.1,
    "lr_base_batch": 256,
    "lr_schedule": "step",
    "milestones": [30, 60, 90],
    "lr_gamma": 0.1,
    "warmup_epochs": 0.0,
    "min_lr": 0.0,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "no_wd_norm_bias": False,
    "label_smoothing": 0.0,
    "amp_level": "auto",
    "loss_scale": 1024.0,
    "keep_checkpoints": 5,
    "eval_every": 1,
    "save_every_steps": 0,
    "log_every": 10,
    "resume": None,
    "pretrained": None,
    "freeze": [],
    "freeze_bn": False,
    "augment": True,
    "shuffle": True,
    "max_steps": 0,
    "dump_weights": None,
    "summary_json": None,
    # evaluation / export
    "checkpoint": None,
    "format": "MINDIR",
    "output": None,
    "export_batch": 0,  # 0: dynamic batch dimension
    "class_names": None,
    "semantics": None,
    "json_out": None,
}

class ConfigError(UserError, ValueError):
    """A --config file is missing, unreadable, or holds an unknown setting or a bad value."""


_PATH_KEYS = {"config", "train_dir", "val_dir", "output_dir", "resume", "pretrained", "dump_weights",
              "summary_json", "checkpoint", "output", "class_names", "json_out"}
# Written beside a run's checkpoints: its resolved settings, for --config.
RUN_CONFIG = "config.yaml"
# Settings of one invocation, not of the run: config.yaml leaves them out (a file cannot
# name another file; --debug is how this process reports an error) and the nodes of a
# multi-node run may differ in them (one node may debug).
INVOCATION_SETTINGS = ("config", "debug")


def _int_list(text: str) -> List[int]:
    try:
        return [int(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated integers, got %r" % text) from None


def _str_list(text: str) -> List[str]:
    return [v for v in str(text).replace(" ", "").split(",") if v]


def _within(kind: Callable[[str], Any], accept: Callable[[Any], bool], wording: str) -> Callable[[str], Any]:
    """An option type: ``kind(text)``, refused at parse time unless ``accept``-ed (before
    any data is read: a run must not scan its images to be told of a typo)."""
    def parse(text: str):
        value = kind(text)
        if not accept(value):
            raise argparse.ArgumentTypeError("must be %s, got %s" % (wording, text))
        return value

    parse.__name__ = kind.__name__
    return parse


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    return _within(kind, lambda v: v > 0, "positive")


def _non_negative(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    return _within(kind, lambda v: v >= 0, "0 or more")


_fraction = _within(float, lambda v: 0 <= v < 1, "in [0, 1)")


def _device(text: str) -> str:
    for d in DEVICES:
        if text.lower() == d.lower():
            return d
    raise argparse.ArgumentTypeError("device must be one of %s, got %r" % (", ".join(DEVICES), text))


class SettingsParser(argparse.ArgumentParser):
    """An ArgumentParser that lists the settings its options set (``settings``, in --help
    order): what a run's ``config.yaml`` records."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings: List[str] = []


class _Options:
    """Adds options with ``default=SUPPRESS`` so the parsed namespace holds only what was typed."""

    def __init__(self, parser: SettingsParser, title: str):
        self.group = parser.add_argument_group(title)
        self.settings = parser.settings

    def __call__(self, *flags: str, dest: str, help: str, **kw: Any) -> None:
        default = DEFAULTS[dest]
        if kw.get("action") not in ("store_true", "store_false") and default not in (None, [], ""):
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            help = "%s (default: %s)" % (help, shown)
        self.group.add_argument(*flags, dest=dest, default=argparse.SUPPRESS, help=help, **kw)
        self.settings.append(dest)


def add_common(parser: SettingsParser) -> None:
    opt = _Options(parser, "common")
    opt("--config", dest="config", metavar="FILE", help="YAML or TOML file of settings; flags override it")
    opt("--debug", dest="debug", action="store_true",
        help="on an error, also print its traceback (as does IBNEDGE_DEBUG=1)")
    opt("--device", dest="device", type=_device, metavar="{Ascend,GPU,CPU}",
        help="device target; " + cpu_isa.HELP)
    opt("--mode", dest="mode", choices=("graph", "pynative"), help="MindSpore execution mode")
    opt("--seed", dest="seed", type=int, help="seed of weights init, shuffling and augmentation")
    opt("--arch", dest="arch", help="model name from train.models (python -m train.models --list)")
    opt("--num-classes", dest="num_classes", type=_positive(int),
        help="classifier outputs; a different value than the pretrained weights' replaces the head")
    opt("--image-size", dest="image_size", type=_positive(int), help="training crop / eval centre crop, pixels")
    opt("--resize", dest="resize", type=_positive(int), help="eval short-side resize before the centre crop")
    opt("--batch-size", dest="batch_size", type=_positive(int), help="images per device and step")
    opt("--workers", dest="workers", type=_positive(int), help="parallel decode workers per process")
    opt("--check-images", dest="check_images", choices=("header", "decode", "none"),
        help="up-front check of every image file; failures are reported by name and skipped")


def add_train(parser: SettingsParser) -> None:
    data = _Options(parser, "data")
    data("--train-dir", dest="train_dir", metavar="DIR", help="ImageFolder root of the training set")
    data("--val-dir", dest="val_dir", metavar="DIR", help="ImageFolder root of the validation set")
    data("--no-augment", dest="augment", action="store_false",
         help="train on the eval transform (deterministic inputs; debugging)")
    data("--no-shuffle", dest="shuffle", action="store_false", help="read the training set in file order")

    opt = _Options(parser, "optimisation")
    opt("--epochs", dest="epochs", type=_positive(int), help="training epochs")
    opt("--lr", dest="lr", type=_positive(float), help="peak learning rate; default base-lr x global batch / lr-base-batch")
    opt("--base-lr", dest="base_lr", type=_positive(float), help="learning rate for lr-base-batch images")
    opt("--lr-base-batch", dest="lr_base_batch", type=_positive(int), help="batch size base-lr refers to")
    opt("--lr-schedule", dest="lr_schedule", choices=SCHEDULES, help="lr schedule")
    opt("--milestones", dest="milestones", type=_int_list, metavar="E1,E2,..", help="step schedule: epochs where lr x= lr-gamma")
    opt("--lr-gamma", dest="lr_gamma", type=_positive(float), help="step schedule decay factor")
    opt("--warmup-epochs", dest="warmup_epochs", type=_non_negative(float), help="linear warmup length (may be fractional)")
    opt("--min-lr", dest="min_lr", type=_non_negative(float), help="cosine schedule floor")
    opt("--momentum", dest="momentum", type=_non_negative(float), help="SGD momentum")
    opt("--weight-decay", dest="weight_decay", type=_non_negative(float), help="SGD weight decay")
    opt("--no-wd-norm-bias", dest="no_wd_norm_bias", action="store_true",
        help="no weight decay on BN/IN parameters and biases")
    opt("--label-smoothing", dest="label_smoothing", type=_fraction, help="label smoothing factor in [0, 1)")
    opt("--amp-level", dest="amp_level", choices=AMP_LEVELS,
        help="mixed precision: auto = O2 on GPU/Ascend, O0 on CPU (CPU refuses others)")
    opt("--loss-scale", dest="loss_scale", type=_positive(float), help="initial dynamic loss scale under AMP")

    tl = _Options(parser, "transfer learning")
    tl("--pretrained", dest="pretrained", metavar="FILE",
       help="initial weights: official .pth (converted on the fly) or MindSpore .ckpt")
    tl("--freeze", dest="freeze", type=_str_list, metavar="PART,..",
       help="parameters not trained: stem, layer1..layer4, backbone, or any parameter-name prefix")
    tl("--freeze-bn", dest="freeze_bn", action="store_true",
       help="BatchNorm uses and keeps its running statistics while training (affine still trained)")

    run = _Options(parser, "run")
    run("--output-dir", dest="output_dir", metavar="DIR", help="checkpoints, logs and summary")
    run("--keep-checkpoints", dest="keep_checkpoints", type=_positive(int), help="latest checkpoints kept")
    run("--eval-every", dest="eval_every", type=_non_negative(int), help="evaluate every K epochs (0: never)")
    run("--save-every-steps", dest="save_every_steps", type=_non_negative(int),
        help="also checkpoint every N steps within an epoch (0: at epoch ends only)")
    run("--log-every", dest="log_every", type=_positive(int), help="print loss and img/s every N steps")
    run("--resume", dest="resume", metavar="CKPT",
        help="continue a run from its checkpoint (epoch, step, optimizer state, lr schedule)")
    run("--max-steps", dest="max_steps", type=_non_negative(int), help="stop after this many steps in total (debugging)")
    run("--dump-weights", dest="dump_weights", metavar="FILE",
        help="write the trainable parameters at the end to FILE (.npz; distributed: one file per rank)")
    run("--summary-json", dest="summary_json", metavar="FILE", help="also write the final JSON summary here")


def add_eval(parser: SettingsParser) -> None:
    opt = _Options(parser, "evaluation")
    opt("--checkpoint", dest="checkpoint", metavar="CKPT", help="weights to evaluate (.ckpt or official .pth)")
    opt("--val-dir", dest="val_dir", metavar="DIR", help="ImageFolder root of the validation set")
    opt("--json-out", dest="json_out", metavar="FILE", help="also write the results here")


def add_export(parser: SettingsParser) -> None:
    opt = _Options(parser, "export")
    opt("--checkpoint", dest="checkpoint", metavar="CKPT",
        help="weights to export (.ckpt from training or conversion, or official .pth)")
    opt("--format", dest="format", type=str.upper, choices=EXPORT_FORMATS, help="model file format")
    opt("--output", dest="output", metavar="FILE", help="model file to write; the metadata JSON goes beside it")
    opt("--export-batch", dest="export_batch", type=_non_negative(int), help="fixed batch size of the exported input (0: dynamic)")
    opt("--class-names", dest="class_names", metavar="FILE",
        help="text file, one class name per line (default: from the checkpoint, or ImageNet's for 1000 classes)")
    opt("--semantics", dest="semantics", choices=SEMANTICS,
        help="resize semantics in the metadata (default: mindspore for models trained here, pil for converted weights)")


def _normalise_key(key: str) -> str:
    return str(key).strip().lstrip("-").replace("-", "_")


def load_config_file(path: Path) -> Dict[str, Any]:
    """Settings from a YAML or TOML file; unknown keys are an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("%s: config file not found" % path)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError("%s: not valid YAML (%s)" % (path, " ".join(str(exc).split())))
    elif suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:
            try:
                import tomli as tomllib
            except ImportError:
                raise ConfigError("%s: reading TOML on Python < 3.11 needs 'pip install tomli'" % path) from None
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    else:
        raise ConfigError("%s: config files are YAML (.yaml, .yml) or TOML (.toml)" % path)
    if not isinstance(data, dict):
        raise ConfigError("%s: expected a mapping of option names to values at the top level" % path)
    out = {}
    for key, value in data.items():
        name = _normalise_key(key)
        if name not in DEFAULTS or name == "config":
            raise ConfigError("%s: unknown setting %r; settings are the long option names of --help" % (path, key))
        out[name] = value
    return out


def _coerce(name: str, value: Any, path: Path) -> Any:
    """File values arrive as YAML/TOML types; lists may also be written as '30,60,90'."""
    if value is None:
        return None
    if name == "milestones":
        return _int_list(value) if isinstance(value, str) else [int(v) for v in value]
    if name == "freeze":
        return _str_list(value) if isinstance(value, str) else [str(v) for v in value]
    if name == "device":
        return _device(str(value))
    if name == "format":
        return str(value).upper()
    if name == "resume" and value == LATEST:  # a word, not a file beside the config file
        return value
    if name in _PATH_KEYS:
        p = Path(str(value)).expanduser()
        return str(p if p.is_absolute() else path.parent / p)
    default = DEFAULTS[name]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError("%s: %s must be true or false, got %r" % (path, name, value))
        return value
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            return type(default)(value)
        except (TypeError, ValueError):
            raise ConfigError("%s: %s must be a number, got %r" % (path, name, value)) from None
    return value


def _as_option_would(action: Optional[argparse.Action], value: Any, path: Path) -> Any:
    """A file value through the checks its --flag applies on the command line: the option's
    type (a positive count, a number) and its choices (``mode: grpah`` ran PyNative,
    ``batch_size: 0`` failed after the dataset scan, ``lr: "0.1"`` stayed a string)."""
    if action is None or value is None:
        return value
    name = action.dest
    if callable(action.type) and not isinstance(value, (bool, list)) and name not in _PATH_KEYS:
        try:
            value = action.type(str(value))
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            raise ConfigError("%s: %s: %s" % (path, name, exc)) from None
    if action.choices is not None and value not in action.choices:
        raise ConfigError("%s: %s must be one of %s, got %r" % (path, name, ", ".join(map(str, action.choices)), value))
    return value


def build_parser(prog: str, description: str, groups: Iterable[Callable[[SettingsParser], None]]) -> SettingsParser:
    parser = SettingsParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(parser)
    for add in groups:
        add(parser)
    return parser


def resolve(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """defaults < config file < command line, as one namespace holding every setting.

    ``explicit`` lists the settings that came from the file or the command line (so that,
    e.g., evaluation can prefer a checkpoint's own input size over a built-in default).
    """
    given = vars(parser.parse_args(argv))
    settings = dict(DEFAULTS)
    explicit = set(given)
    if given.get("config"):
        path = Path(given["config"])
        try:
            actions = dict((a.dest, a) for a in parser._actions)
            from_file = {k: _as_option_would(actions.get(k), _coerce(k, v, path), path)
                         for k, v in load_config_file(path).items()}
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            parser.error(str(exc))
        settings.update(from_file)
        explicit |= set(from_file)
    settings.update(given)
    settings["explicit"] = explicit
    return argparse.Namespace(**settings)


def saved_settings(cfg: argparse.Namespace, parser: SettingsParser) -> Dict[str, Any]:
    """``cfg``'s values of the settings ``parser`` takes, in --help order, as a config file
    must hold them to give them back: paths absolute (a file's relative paths are taken from
    its own folder, not from where they were typed); ``INVOCATION_SETTINGS`` left out."""
    saved: Dict[str, Any] = {}
    for name in parser.settings:
        if name in INVOCATION_SETTINGS:
            continue
        value = getattr(cfg, name)
        if name in _PATH_KEYS and value is not None and not (name == "resume" and value == LATEST):
            value = os.path.abspath(os.path.expanduser(str(value)))
        saved[name] = value
    return saved


def config_text(values: Dict[str, Any], comment: str) -> str:
    """``values`` as a YAML config file that ``load_config_file`` reads back, ``comment`` on top."""
    import yaml

    lines = "".join("# %s\n" % line for line in comment.splitlines())
    return lines + yaml.safe_dump(values, sort_keys=False, default_flow_style=None, allow_unicode=True)


def train_parser() -> SettingsParser:
    return build_parser(
        "python -m train",
        "Train an IBN-Net on an ImageFolder dataset with MindSpore (one device; see train.distributed).",
        [add_train],
    )


def eval_parser() -> SettingsParser:
    return build_parser("python -m train.eval", "Top-1/top-5 accuracy of a checkpoint on an ImageFolder.", [add_eval])


def export_parser() -> SettingsParser:
    return build_parser(
        "python -m train.export",
        "Export a model to MINDIR, ONNX or AIR with its metadata JSON (classes, input, preprocessing).",
        [add_export],
    )
