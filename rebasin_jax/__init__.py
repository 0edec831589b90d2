"""rebasin_jax: Git Re-Basin (Ainsworth, Hayase & Srinivasa, ICLR 2023) for JAX/Flax.

The public API, re-exported explicitly; see README.md for a tour.
"""

from rebasin_jax.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from rebasin_jax.data import (
    MNIST,
    MnistDataError,
    ModularAdditionData,
    Split,
    load_mnist,
    modular_addition_data,
)
from rebasin_jax.interpolate import (
    curve_barriers,
    interpolation_curve,
    lerp,
    loss_barrier,
)
from rebasin_jax.matching import (
    ActivationMatchingInfo,
    OrthogonalAlignment,
    SteMatchingInfo,
    WeightMatchingInfo,
    activation_matching,
    align,
    orthogonal_weight_matching,
    ste_matching,
    weight_matching,
    weight_matching_objective,
)
from rebasin_jax.metrics import ClassificationMetrics, SupervisedLoss
from rebasin_jax.models import (
    MLP,
    ModularAdditionMLP,
    build_model,
    hidden_activations,
    mlp_spec,
    modular_addition_mlp_spec,
)
from rebasin_jax.spec import (
    PermutationSpec,
    SpecError,
    apply_permutation,
    available_specs,
    compose_permutations,
    get_spec,
    identity_permutation,
    inverse_permutation,
    permutation_spec_from_axes_to_perm,
    random_permutation,
    register_spec,
    validate_spec,
)
from rebasin_jax.train import (
    MNISTConfig,
    ModularAdditionConfig,
    TrainingDivergedError,
    TrainResult,
    train_mnist,
    train_modular_addition,
    unstack,
)
from rebasin_jax.types import Params, Permutation, PRNGKey

__version__ = "0.1.0"

__all__ = [
    # spec
    "PermutationSpec",
    "SpecError",
    "permutation_spec_from_axes_to_perm",
    "register_spec",
    "get_spec",
    "available_specs",
    "identity_permutation",
    "random_permutation",
    "inverse_permutation",
    "compose_permutations",
    "apply_permutation",
    "validate_spec",
    # matching
    "weight_matching",
    "WeightMatchingInfo",
    "weight_matching_objective",
    "activation_matching",
    "ActivationMatchingInfo",
    "ste_matching",
    "SteMatchingInfo",
    "orthogonal_weight_matching",
    "OrthogonalAlignment",
    "align",
    # interpolation
    "lerp",
    "interpolation_curve",
    "loss_barrier",
    "curve_barriers",
    # models
    "MLP",
    "ModularAdditionMLP",
    "mlp_spec",
    "modular_addition_mlp_spec",
    "hidden_activations",
    "build_model",
    # data
    "load_mnist",
    "MNIST",
    "Split",
    "MnistDataError",
    "modular_addition_data",
    "ModularAdditionData",
    # training
    "ModularAdditionConfig",
    "MNISTConfig",
    "train_modular_addition",
    "train_mnist",
    "TrainResult",
    "TrainingDivergedError",
    "ClassificationMetrics",
    "SupervisedLoss",
    "unstack",
    # checkpoints
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "Checkpoint",
    "CheckpointError",
    # types
    "Params",
    "Permutation",
    "PRNGKey",
]
