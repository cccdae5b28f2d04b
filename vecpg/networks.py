"""Feature extractors: an MLP, the Nature-DQN CNN, and an encoder for any observation space.

``B`` is the batch size. :class:`ObservationEncoder` turns a batch of observations, as
torch tensors with the env's dtype (``uint8`` images stay ``uint8`` until here), into
float features ``[B, out_features]``:

- Box vectors (any shape that is not an image): flattened to float;
- ``uint8`` Box images ``[H, W, C]`` or ``[C, H, W]`` (or ``[H, W]``) at least 36 pixels
  on each side: scaled by 1/255 and passed through :class:`NatureCNN`; smaller ``uint8``
  arrays (grid worlds) are flattened like vectors;
- Discrete and MultiDiscrete: one-hot (concatenated per dimension);
- MultiBinary: flattened to float;
- Dict and Tuple: one encoder per entry, outputs concatenated in the space's order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vecpg.errors import ConfigError

__all__ = [
    "MLP",
    "NatureCNN",
    "ObservationEncoder",
    "activation_class",
    "orthogonal_init",
]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}

# The same activations as functions, for MLP.forward's direct calls.
_ACTIVATION_FUNCTIONS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "elu": F.elu,
    "gelu": F.gelu,
    "silu": F.silu,
}

# NatureCNN's three convolutions (kernel/stride 8/4, 4/2, 3/1) shrink a side of 36 pixels
# to 8, 3, then 1: the smallest image it accepts.
MIN_IMAGE_SIZE = 36


def activation_class(name: str) -> type[nn.Module]:
    """The ``nn.Module`` class of an activation name (``"tanh"``, ``"relu"``, ...)."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(
            f"activation={name!r} is not supported; choose one of {sorted(_ACTIVATIONS)}"
        ) from None


def orthogonal_init(module: nn.Module, gain: float = math.sqrt(2.0)) -> None:
    """Orthogonal weights with ``gain`` and zero biases for every Linear/Conv2d in ``module``."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear | nn.Conv2d):
            # Drawn in a contiguous tensor, then copied: orthogonal_ needs a flat view,
            # which a channels-last convolution weight does not give; the copy keeps it.
            weight = nn.init.orthogonal_(torch.empty(layer.weight.shape), gain)
            with torch.no_grad():
                layer.weight.copy_(weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class MLP(nn.Module):
    """Linear layers, each followed by the activation.

    Args:
        in_features: input size.
        hidden_sizes: output size of each layer; empty for the identity.
        activation: ``"tanh"``, ``"relu"``, ``"elu"``, ``"gelu"`` or ``"silu"``.

    Attributes:
        out_features: ``hidden_sizes[-1]``, or ``in_features`` when there are no layers.

    Example:
        >>> import torch
        >>> MLP(4, (64, 64))(torch.zeros(8, 4)).shape
        torch.Size([8, 64])
    """

    def __init__(
        self, in_features: int, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh"
    ) -> None:
        super().__init__()
        activation_type = activation_class(activation)
        layers: list[nn.Module] = []
        size = int(in_features)
        for hidden_size in hidden_sizes:
            if int(hidden_size) < 1:
                raise ConfigError(f"hidden_sizes must be positive integers, got {hidden_sizes}")
            layers += [nn.Linear(size, int(hidden_size)), activation_type()]
            size = int(hidden_size)
        self.layers = nn.Sequential(*layers)
        self.out_features = size
        # forward calls the layers' functions directly: with a small MLP, going through
        # each submodule's __call__ costs as much as the layer's arithmetic.
        self._linears = [layer for layer in layers if isinstance(layer, nn.Linear)]
        self._activation = _ACTIVATION_FUNCTIONS[activation]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, in_features]`` -> ``[B, out_features]``."""
        for linear in self._linears:
            features = self._activation(F.linear(features, linear.weight, linear.bias))
        return features


class NatureCNN(nn.Module):
    """The convolutional torso of Mnih et al. (2015), for images of at least 36x36 pixels.

    Args:
        in_channels: channels ``C`` of the ``[B, C, H, W]`` float input.
        height: ``H``.
        width: ``W``.
        out_features: size of the final ReLU linear layer (512 in the paper).

    Example:
        >>> import torch
        >>> NatureCNN(4, 84, 84)(torch.zeros(2, 4, 84, 84)).shape
        torch.Size([2, 512])
    """

    def __init__(self, in_channels: int, height: int, width: int, out_features: int = 512) -> None:
        super().__init__()
        if min(height, width) < MIN_IMAGE_SIZE:
            raise ConfigError(
                f"NatureCNN needs images of at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels, "
                f"got {height}x{width}"
            )
        self.convolutions = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )

        def shrink(side: int) -> int:
            return ((side - 8) // 4 + 1 - 4) // 2 + 1 - 2

        flat_features = 64 * shrink(height) * shrink(width)
        self.linear = nn.Sequential(nn.Linear(flat_features, out_features), nn.ReLU())
        self.out_features = out_features
        # Channels-last weights (and inputs, in forward): oneDNN's convolutions run without
        # converting layouts: PPO on Pong trains at 1.17x SB3 on a CPU, 0.98x without (ATARI.md).
        # Only the memory layout changes: shapes, values and state_dict keys stay the same.
        self.convolutions.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs lack it

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` float images, in any memory layout -> ``[B, out_features]``."""
        return self.linear(self.convolutions(images.contiguous(memory_format=torch.channels_last)))


def _image_layout(space: gym.spaces.Box) -> str | None:
    """``"HWC"``, ``"CHW"`` or ``"HW"`` for a uint8 image Box large enough for NatureCNN."""
    if space.dtype != np.uint8:
        return None
    shape = space.shape
    if len(shape) == 2:
        return "HW" if min(shape) >= MIN_IMAGE_SIZE else None
    if len(shape) != 3:
        return None
    # The channel axis is the smaller end: (84, 84, 4) is HWC, (4, 84, 84) is CHW.
    layout = "HWC" if shape[2] <= shape[0] else "CHW"
    height, width = (shape[0], shape[1]) if layout == "HWC" else (shape[1], shape[2])
    return layout if min(height, width) >= MIN_IMAGE_SIZE else None


class _Encoder(nn.Module):
    """An observation encoder for one space: ``[B, ...]`` -> float ``[B, out_features]``."""

    out_features: int


class _FlattenEncoder(_Encoder):
    def __init__(self, space: gym.spaces.Box | gym.spaces.MultiBinary) -> None:
        super().__init__()
        self.out_features = int(np.prod(space.shape))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return observations.reshape(observations.shape[0], -1).float()


class _ImageEncoder(_Encoder):
    def __init__(self, space: gym.spaces.Box, layout: str) -> None:
        super().__init__()
        shape = space.shape
        if layout == "HW":
            channels, height, width = 1, shape[0], shape[1]
        elif layout == "HWC":
            height, width, channels = shape
        else:
            channels, height, width = shape
        self.layout = layout
        self.cnn = NatureCNN(channels, height, width)
        self.out_features = self.cnn.out_features

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        images = observations
        if self.layout == "HW":
            images = images.unsqueeze(1)
        elif self.layout == "HWC":
            images = images.permute(0, 3, 1, 2)
        # Scaling here rather than in the buffer keeps observations uint8 (4x smaller)
        # all the way from the shared-memory buffer to the device; so does the layout
        # change to channels-last (a no-op for HWC images, whose permuted view already is).
        images = images.contiguous(memory_format=torch.channels_last)
        return self.cnn(images.float() / 255.0)


class _OneHotEncoder(_Encoder):
    """Discrete (one index) or MultiDiscrete (one one-hot per dimension, concatenated)."""

    start: torch.Tensor
    columns: torch.Tensor

    def __init__(self, space: gym.spaces.Discrete | gym.spaces.MultiDiscrete) -> None:
        super().__init__()
        if isinstance(space, gym.spaces.Discrete):
            sizes, starts = [int(space.n)], [int(space.start)]
        else:
            sizes = [int(size) for size in np.asarray(space.nvec).reshape(-1)]
            starts = [int(start) for start in np.asarray(space.start).reshape(-1)]
        self.max_size = max(sizes)
        self.register_buffer("start", torch.tensor(starts), persistent=False)
        # Columns of the real choices in the [K * max_size] one-hot layout.
        columns = [k * self.max_size + i for k, size in enumerate(sizes) for i in range(size)]
        self.register_buffer("columns", torch.tensor(columns), persistent=False)
        self.out_features = sum(sizes)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        indices = observations.long().reshape(observations.shape[0], -1) - self.start
        one_hot = F.one_hot(indices, self.max_size).reshape(indices.shape[0], -1)
        return one_hot.index_select(1, self.columns).float()


class _ConcatEncoder(_Encoder):
    """Dict or Tuple: one encoder per entry, features concatenated in the space's order."""

    def __init__(self, space: gym.spaces.Dict | gym.spaces.Tuple) -> None:
        super().__init__()
        if isinstance(space, gym.spaces.Dict):
            self.keys: list[str | int] = list(space.spaces.keys())
            subspaces = list(space.spaces.values())
        else:
            self.keys = list(range(len(space.spaces)))
            subspaces = list(space.spaces)
        if not subspaces:
            raise ConfigError(f"observation space {space} has no entries to encode")
        # A ModuleList, not a ModuleDict: Dict keys may contain dots, which ModuleDict rejects.
        encoders = [_encoder_for(subspace) for subspace in subspaces]
        self.encoders = nn.ModuleList(encoders)
        self.out_features = sum(encoder.out_features for encoder in encoders)

    def forward(self, observations) -> torch.Tensor:
        return torch.cat(
            [
                encoder(observations[key])
                for key, encoder in zip(self.keys, self.encoders, strict=True)
            ],
            dim=1,
        )


def _encoder_for(space: gym.Space) -> _Encoder:
    if isinstance(space, gym.spaces.Box):
        layout = _image_layout(space)
        return _ImageEncoder(space, layout) if layout else _FlattenEncoder(space)
    if isinstance(space, gym.spaces.Discrete | gym.spaces.MultiDiscrete):
        return _OneHotEncoder(space)
    if isinstance(space, gym.spaces.MultiBinary):
        return _FlattenEncoder(space)
    if isinstance(space, gym.spaces.Dict | gym.spaces.Tuple):
        return _ConcatEncoder(space)
    raise ConfigError(
        f"observation space {space} is not supported; vecpg encodes Box, Discrete, "
        "MultiDiscrete, MultiBinary, Dict and Tuple observations"
    )


class ObservationEncoder(nn.Module):
    """Float features ``[B, out_features]`` from observations of any supported space.

    Args:
        observation_space: the env's single (not batched) observation space.

    Attributes:
        out_features: the feature size.

    Raises:
        ConfigError: for an unsupported space (Text, Graph, Sequence, ...).

    Example:
        >>> import gymnasium as gym, torch
        >>> space = gym.spaces.Dict({"position": gym.spaces.Box(-1, 1, (3,)),
        ...                          "room": gym.spaces.Discrete(4)})
        >>> encoder = ObservationEncoder(space)
        >>> encoder({"position": torch.zeros(2, 3), "room": torch.tensor([0, 3])}).tolist()
        [[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]]
    """

    def __init__(self, observation_space: gym.Space) -> None:
        super().__init__()
        self.observation_space = observation_space
        encoder = _encoder_for(observation_space)
        self.encoder = encoder
        self.out_features = encoder.out_features

    def forward(self, observations) -> torch.Tensor:
        """Observations (a tensor, or a dict/tuple of them) ``[B, ...]`` -> ``[B, out_features]``."""
        return self.encoder.forward(observations)  # no Module-call overhead (see MLP)
