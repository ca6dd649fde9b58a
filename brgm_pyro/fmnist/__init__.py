"""The Fashion-MNIST feature networks: a perceptual phi for the likelihood and an evaluator for the metrics.

* :mod:`~brgm_pyro.fmnist.networks`: the two classifiers (PerceptNet, EvalNet), their input
  resizing, the LPIPS-style features and the shipped weights (``brgm_pyro/priors/features/``);
* :mod:`~brgm_pyro.fmnist.percept`: :class:`FMNISTPercept`, the phi registered as ``"fmnist"``;
* :mod:`~brgm_pyro.fmnist.evaluator`: :class:`FMNISTEval` and its metrics (Frechet distance,
  class fidelity, class histogram).

Their training is :mod:`brgm_pyro.training.feature_nets` (``scripts/train_feature_nets.py``).
"""

from brgm_pyro.fmnist.evaluator import (
    FMNISTEval,
    class_fidelity,
    class_histogram,
    fid,
    frechet_distance,
    frechet_distance_gaussians,
)
from brgm_pyro.fmnist.networks import (
    CLASS_NAMES,
    FEATURES_DIR,
    INPUT_SIZE,
    EvalNet,
    PerceptNet,
    feature_net_path,
    load_feature_net,
    resize_to_input,
)
from brgm_pyro.fmnist.percept import FMNISTPercept

__all__ = [
    "CLASS_NAMES",
    "FEATURES_DIR",
    "INPUT_SIZE",
    "EvalNet",
    "FMNISTEval",
    "FMNISTPercept",
    "PerceptNet",
    "class_fidelity",
    "class_histogram",
    "feature_net_path",
    "fid",
    "frechet_distance",
    "frechet_distance_gaussians",
    "load_feature_net",
    "resize_to_input",
]
