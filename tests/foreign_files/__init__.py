"""Foreign checkpoint files written with the exact structure their publishers' code writes, for the tests.

Each writer takes one of our tiny random generators and writes the file its original code would
write for those weights: the same pickle globals and opcodes, the same records and key names.
The structure facts come from the writers' public code, read, not copied; nothing of NVIDIA's
source is here: ``module_src`` and ``build_module_src`` are placeholders holding the markers the
loaders read, followed by code that would create a sentinel file if anything executed it.
``scripts/check_real_checkpoints.py`` compares these files' structure with files written by the
real code (NVIDIA PyTorch and rosinality; TensorFlow 1.x cannot run here).

    pickling.py     stand-ins pickled under the real global names; the globals a file names
    generators.py   the tiny random generators
    nvidia.py       stylegan2-ada-pytorch and stylegan3 training snapshots
    tensorflow.py   StyleGAN2 TensorFlow (G, D, Gs) pickles
    rosinality.py   rosinality's train.py and convert_weight.py checkpoints
"""

from foreign_files.generators import TINY, assert_same_generator, perturbed, random_generator
from foreign_files.nvidia import (
    NVIDIA_GLOBALS,
    nvidia_generator,
    nvidia_source,
    stylegan3_generator,
    write_nvidia_pickle,
)
from foreign_files.pickling import Network, dump, pickle_globals
from foreign_files.rosinality import to_rosinality, write_rosinality
from foreign_files.tensorflow import tensorflow_source, tf_variables, write_tf_pickle

__all__ = [
    "NVIDIA_GLOBALS",
    "TINY",
    "Network",
    "assert_same_generator",
    "dump",
    "nvidia_generator",
    "nvidia_source",
    "perturbed",
    "pickle_globals",
    "random_generator",
    "stylegan3_generator",
    "tensorflow_source",
    "tf_variables",
    "to_rosinality",
    "write_nvidia_pickle",
    "write_rosinality",
    "write_tf_pickle",
]
