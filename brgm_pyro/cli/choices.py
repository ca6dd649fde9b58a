"""The library's names and defaults that the commands' options offer and show, without importing torch.

Parsing a command line and ``brgm CMD --help`` import this module, not the library's (which import
torch and Pyro, seconds of start-up): the values are copied here, and ``tests/test_cli_help.py``
checks each against the library so that a copy never goes stale.
"""

from __future__ import annotations

# brgm_pyro.forward._KERNEL_NAMES: the Downsample kernels by name.
KERNELS = ("box", "bilinear", "bicubic", "gaussian")
# brgm_pyro.models.brgm.PRESETS: the parameter presets.
PRESETS = ("default", "paper", "brgm-reference")
# brgm_pyro.models.variants.available_models(): the registered posterior models.
MODELS = ("brgm", "learned-noise", "heavy-tail", "no-colinear", "reach", "unknown-blur", "mapping")
# brgm_pyro.sampling.METHODS and DEFAULT_MODEL.
METHODS = ("laplace", "svi", "nuts", "hmc")
DEFAULT_MODEL = "auto"
# brgm_pyro.search.SearchSettings().modes: the modes the MAP's search refines.
SEARCH_MODES = 4
# brgm_pyro.inference.svi.GUIDES.
GUIDES = ("auto", "normal", "lowrank", "laplace")
# brgm_pyro.inference.laplace.MAX_LAPLACE_DIM.
MAX_LAPLACE_DIM = 4096
# The defaults of MAPSchedule, SVISettings and MCMCSettings (brgm_pyro.inference) that the help shows.
MAP_DEFAULTS = {"steps": 300, "lr": 0.05}
SVI_DEFAULTS = {"guide": "auto", "rank": 16, "steps": 300, "lr": 0.05, "num_particles": 1}
MCMC_DEFAULTS = {"num_chains": 2, "warmup_steps": 100, "max_tree_depth": 7, "trajectory_length": 1.0}
# The defaults of brgm_pyro.training.recipe.TrainConfig that `brgm train-prior` offers as options.
TRAIN_DEFAULTS = {"batch_size": 64, "channel_base": 2048, "channel_max": 96, "r1_gamma": 0.1, "pl_weight": 2.0}
