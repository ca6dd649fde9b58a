"""The `brgm` command's help: parsing imports no torch (so --help answers at once), the names and defaults it
offers are the library's, every command describes --task, --seed and --generator alike, and the README's
train-prior example is the default recipe."""

import argparse
import json
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from brgm_pyro.baselines.masks import MASK_KINDS
from brgm_pyro.cli import COMMANDS, build_parser, choices, main
from brgm_pyro.forward.resample import KERNEL_NAMES as _KERNEL_NAMES
from brgm_pyro.inference.laplace import MAX_LAPLACE_DIM
from brgm_pyro.inference.map import MAPSchedule
from brgm_pyro.inference.mcmc import MCMCSettings
from brgm_pyro.inference.svi import GUIDES, SVISettings
from brgm_pyro.models.brgm import PRESETS
from brgm_pyro.models.variants import available_models
from brgm_pyro.sampling import DEFAULT_MODEL, METHODS
from brgm_pyro.search import SearchSettings
from brgm_pyro.training.recipe import TrainConfig

REPO = Path(__file__).resolve().parent.parent


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_names_and_defaults_the_options_offer_are_the_librarys():
    assert choices.KERNELS == _KERNEL_NAMES
    assert choices.PRESETS == PRESETS
    assert list(choices.MODELS) == available_models()
    assert (choices.METHODS, choices.DEFAULT_MODEL) == (METHODS, DEFAULT_MODEL)
    assert (choices.GUIDES, choices.MAX_LAPLACE_DIM) == (GUIDES, MAX_LAPLACE_DIM)
    assert choices.SEARCH_MODES == SearchSettings().modes
    for copied, library in ((choices.MAP_DEFAULTS, MAPSchedule()), (choices.SVI_DEFAULTS, SVISettings()),
                            (choices.MCMC_DEFAULTS, MCMCSettings()), (choices.TRAIN_DEFAULTS, TrainConfig())):
        assert copied == {key: asdict(library)[key] for key in copied}
    assert len(MASK_KINDS) == 7  # `brgm evaluate --masks` says "default all seven"


def test_parsing_and_every_help_import_no_torch():
    """What makes `brgm --help` and `brgm CMD --help` answer at once: nothing before the command runs imports
    torch (its import takes seconds)."""
    code = (
        "import contextlib, io, sys\n"
        "from brgm_pyro.cli import main\n"
        "for argv in [['--help'], *[[name, '--help'] for name in sys.argv[1:]]]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as shown:\n"
        "        assert main(argv) == 0, argv\n"
        "    assert shown.getvalue().startswith('usage: brgm'), argv\n"
        "print(sorted(name for name in ('torch', 'pyro', 'numpy', 'PIL') if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *_subcommands()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


def test_every_command_explains_task_seed_and_generator_the_same_way():
    generators = set()
    for name, parser in _subcommands().items():
        options = {option: action for action in parser._actions for option in action.option_strings}
        for option in ("--task", "--seed", "--threads"):
            if option in options:
                assert options[option].help, f"brgm {name} {option} has no help text"
        if "--generator" in options:
            generators.add((options["--generator"].metavar, options["--generator"].help, options["--generator"].default))
    assert len(generators) == 1, generators
    assert next(iter(generators))[0] == "NAME_OR_FILE"


def test_every_compute_command_takes_threads():
    compute = {"reconstruct", "sample", "calibrate", "reconstruct-dataset", "demo", "evaluate", "train-prior"}
    for name, parser in _subcommands().items():
        has = any("--threads" in action.option_strings for action in parser._actions)
        assert has == (name in compute), name
    assert {module.__name__.rsplit(".", 1)[1].replace("_", "-") for module in COMMANDS} == set(_subcommands())


def test_the_readmes_train_prior_example_is_the_default_recipe():
    example = next(line for line in (REPO / "README.md").read_text().splitlines() if "brgm train-prior" in line)
    given = dict(re.findall(r"--(channel-max|batch-size|channel-base) (\d+)", example))
    assert given, example
    defaults = _subcommands()["train-prior"].parse_args(["--out", "x"])
    for flag, value in given.items():
        assert getattr(defaults, flag.replace("-", "_")) == int(value), flag
    card = json.loads((REPO / "brgm_pyro" / "priors" / "fashion-mnist-32.json").read_text())["train_config"]
    assert (defaults.channel_max, defaults.batch_size) == (card["channel_max"], card["batch_size"])


def test_train_prior_on_a_device_it_cannot_use_is_one_line(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, message in (("tpu", "argument --device: invalid choice: 'tpu' (choose from 'cpu', 'cuda')"),
                            ("cuda", "--device cuda was given but no CUDA GPU is available; use --device cpu.")):
        assert main(["train-prior", "--out", str(tmp_path / "run"), "--device", device]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not (tmp_path / "run").exists()
