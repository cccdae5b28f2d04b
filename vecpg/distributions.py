"""Action distributions, one per action-space type, and the heads that build them.

``B`` is the batch size (envs, or samples of a minibatch). A head maps features
``[B, F]`` to an immutable :class:`Distribution` with ``sample()``, ``log_prob(actions)``
(``[B]``), ``entropy()`` (``[B]``) and ``mode()``. Actions are torch tensors:

=================  ==========================  ==========================
space              distribution                actions
=================  ==========================  ==========================
Discrete(n)        :class:`Categorical`        int64 ``[B]``
MultiDiscrete      :class:`MultiCategorical`   int64 ``[B, *nvec.shape]``
MultiBinary        :class:`Bernoulli`          float32 ``[B, *shape]`` (0/1)
Box                :class:`DiagGaussian`       float32 ``[B, *shape]``
Box, squash=True   :class:`TanhGaussian`       float32 ``[B, *shape]`` in [-1, 1]
Box, use_sde=True  :class:`StateDependentGaussian`  float32 ``[B, *shape]``
=================  ==========================  ==========================

Actions carry the space's ``start`` offset (``Discrete(3, start=-1)`` samples -1, 0, 1),
so they are exactly what the env expects. Box actions are the *sampled* actions; the head's
:meth:`ActionHead.to_env_actions` clips (or rescales) them for the env without touching
the tensor whose log-probability is stored.

Use :func:`for_action_space` to get the right head for a Gymnasium space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vecpg.errors import ConfigError

__all__ = [
    "ActionHead",
    "Bernoulli",
    "BernoulliHead",
    "Categorical",
    "CategoricalHead",
    "DiagGaussian",
    "Distribution",
    "GaussianHead",
    "MultiCategorical",
    "MultiCategoricalHead",
    "StateDependentGaussian",
    "TanhGaussian",
    "for_action_space",
]

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


class Distribution:
    """Base class of the immutable action distributions.

    Attributes are set once in ``__init__``; assigning later raises ``AttributeError`` so
    a distribution built from one forward pass cannot be silently changed afterwards.
    """

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; build a new distribution")

    def _set(self, **fields: Any) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    @property
    def noise_shape(self) -> torch.Size:
        """Shape ``[B, ...]`` of the standard-uniform noise :meth:`sample` consumes."""
        raise NotImplementedError

    def sample(self, uniform: torch.Tensor | None = None) -> torch.Tensor:
        """Draw one action per batch row (no gradient).

        Args:
            uniform: optional noise in the open interval (0, 1), shaped like
                :attr:`noise_shape`, used instead of torch's global generator. Row ``b`` of
                the sample then depends only on row ``b`` of the parameters and of the
                noise, so a caller that keys the noise by env (see
                :class:`vecpg.sampler.ActionNoise`) gets the same actions however the envs
                are split into batches (one machine or several Ray samplers).
        """
        raise NotImplementedError

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """Log-probability (or log-density) of ``actions``, summed over action dims: ``[B]``."""
        raise NotImplementedError

    def entropy(self) -> torch.Tensor:
        """Entropy per batch row, summed over action dims: ``[B]``."""
        raise NotImplementedError

    def mode(self) -> torch.Tensor:
        """The most likely action (the mean for Gaussians), for deterministic evaluation."""
        raise NotImplementedError


def _gumbel_max(log_probs: torch.Tensor, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """Indices drawn from the categoricals along the last dim (no gradient).

    argmax(log p + Gumbel noise) is an exact sample; it costs about half of
    ``torch.multinomial`` on the small CPU batches of a rollout step, and padded ``-inf``
    choices stay impossible. ``uniform`` (shaped like ``log_probs``) replaces torch's draw.
    """
    if uniform is None:
        uniform = torch.rand_like(log_probs)
    return (log_probs.detach() - torch.log(-torch.log(uniform))).argmax(-1)


def _standard_normal(uniform: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal noise from uniform noise in (0, 1), by the inverse CDF."""
    return math.sqrt(2.0) * torch.erfinv(2.0 * uniform.to(dtype) - 1.0)


def _categorical_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    # Clamping -inf log-probabilities (masked or padded choices) keeps 0 * log 0 at 0
    # instead of NaN, without changing any finite term.
    clamped = log_probs.clamp(min=torch.finfo(log_probs.dtype).min)
    return -(log_probs.exp() * clamped).sum(-1)


class Categorical(Distribution):
    """One choice out of ``n`` (Discrete spaces).

    Args:
        logits: ``[B, n]`` unnormalized log-probabilities.
        start: the space's ``start``; actions are ``start + index``.

    Example:
        >>> import torch
        >>> distribution = Categorical(torch.log(torch.tensor([[0.25, 0.75]])))
        >>> distribution.mode().tolist(), round(distribution.log_prob(torch.tensor([0])).item(), 4)
        ([1], -1.3863)
    """

    __slots__ = ("logits", "start")
    logits: torch.Tensor
    start: int

    def __init__(self, logits: torch.Tensor, start: int = 0) -> None:
        self._set(logits=torch.log_softmax(logits, -1), start=int(start))

    @property
    def probs(self) -> torch.Tensor:
        """``[B, n]`` probabilities."""
        return self.logits.exp()

    @property
    def noise_shape(self) -> torch.Size:
        return self.logits.shape

    def sample(self, uniform: torch.Tensor | None = None) -> torch.Tensor:
        return self._shift(_gumbel_max(self.logits, uniform), self.start)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        indices = self._shift(actions.long(), -self.start).unsqueeze(-1)
        return self.logits.gather(-1, indices).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return _categorical_entropy(self.logits)

    def mode(self) -> torch.Tensor:
        return self._shift(self.logits.argmax(-1), self.start)

    @staticmethod
    def _shift(indices: torch.Tensor, offset: int) -> torch.Tensor:
        # Most Discrete spaces start at 0: skip a no-op tensor op per call.
        return indices + offset if offset else indices


class MultiCategorical(Distribution):
    """Independent categoricals, one per MultiDiscrete dimension.

    Args:
        logits: ``[B, K, M]`` logits of the ``K`` dimensions, padded with ``-inf`` up to
            the largest size ``M`` (see :class:`MultiCategoricalHead`).
        start: ``[K]`` int64 offsets (the space's ``start``, flattened).
        action_shape: the space's ``nvec.shape``; samples are ``[B, *action_shape]``.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[0.0, 5.0, -float("inf")], [0.0, 1.0, 9.0]]])
        >>> MultiCategorical(logits, torch.zeros(2, dtype=torch.int64), (2,)).mode().tolist()
        [[1, 2]]
    """

    __slots__ = ("action_shape", "logits", "start")
    logits: torch.Tensor
    start: torch.Tensor
    action_shape: tuple[int, ...]

    def __init__(
        self, logits: torch.Tensor, start: torch.Tensor, action_shape: Sequence[int]
    ) -> None:
        self._set(
            logits=torch.log_softmax(logits, -1),
            start=start,
            action_shape=tuple(action_shape),
        )

    def _to_actions(self, indices: torch.Tensor) -> torch.Tensor:
        return (indices + self.start).reshape(indices.shape[0], *self.action_shape)

    @property
    def noise_shape(self) -> torch.Size:
        return self.logits.shape

    def sample(self, uniform: torch.Tensor | None = None) -> torch.Tensor:
        return self._to_actions(_gumbel_max(self.logits, uniform))

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        indices = actions.long().reshape(actions.shape[0], -1) - self.start
        return self.logits.gather(-1, indices.unsqueeze(-1)).squeeze(-1).sum(-1)

    def entropy(self) -> torch.Tensor:
        return _categorical_entropy(self.logits).sum(-1)

    def mode(self) -> torch.Tensor:
        return self._to_actions(self.logits.argmax(-1))


class Bernoulli(Distribution):
    """Independent 0/1 variables (MultiBinary), or one of two actions (Discrete(2)).

    Args:
        logits: ``[B, K]`` logits of ``P(bit = 1)``.
        action_shape: the MultiBinary shape; samples are float ``[B, *action_shape]``.
            ``None`` for the Discrete(2) form: ``K == 1`` and samples are int64 ``[B]``
            equal to ``start + bit``.
        start: the Discrete(2) space's ``start`` (ignored for MultiBinary).

    Example:
        >>> import torch
        >>> distribution = Bernoulli(torch.tensor([[2.0, -3.0]]), action_shape=(2,))
        >>> distribution.mode().tolist()
        [[1.0, 0.0]]
    """

    __slots__ = ("action_shape", "logits", "start")
    logits: torch.Tensor
    action_shape: tuple[int, ...] | None
    start: int

    def __init__(
        self,
        logits: torch.Tensor,
        action_shape: Sequence[int] | None,
        start: int = 0,
    ) -> None:
        shape = None if action_shape is None else tuple(action_shape)
        self._set(logits=logits, action_shape=shape, start=int(start))

    def _to_actions(self, bits: torch.Tensor) -> torch.Tensor:
        if self.action_shape is None:
            return bits.squeeze(-1).long() + self.start
        return bits.reshape(bits.shape[0], *self.action_shape)

    def _to_bits(self, actions: torch.Tensor) -> torch.Tensor:
        if self.action_shape is None:
            return (actions - self.start).to(self.logits.dtype).unsqueeze(-1)
        return actions.to(self.logits.dtype).reshape(actions.shape[0], -1)

    @property
    def noise_shape(self) -> torch.Size:
        return self.logits.shape

    def sample(self, uniform: torch.Tensor | None = None) -> torch.Tensor:
        probs = torch.sigmoid(self.logits.detach())
        if uniform is None:
            return self._to_actions(torch.bernoulli(probs))
        return self._to_actions((uniform < probs).to(probs.dtype))

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        bits = self._to_bits(actions)
        # log σ(x) = -softplus(-x) and log(1 - σ(x)) = -softplus(x): stable for large |x|.
        return -F.binary_cross_entropy_with_logits(self.logits, bits, reduction="none").sum(-1)

    def entropy(self) -> torch.Tensor:
        probs = torch.sigmoid(self.logits)
        return (probs * F.softplus(-self.logits) + (1.0 - probs) * F.softplus(self.logits)).sum(-1)

    def mode(self) -> torch.Tensor:
        return self._to_actions((self.logits > 0).to(self.logits.dtype))


class DiagGaussian(Distribution):
    """Diagonal Gaussian over Box actions.

    Args:
        mean: ``[B, A]`` means (``A`` = the flattened action size).
        log_std: ``[B, A]`` log standard deviations, already clamped by the head.
        action_shape: the Box shape; samples are ``[B, *action_shape]``.

    Example:
        >>> import torch
        >>> distribution = DiagGaussian(torch.zeros(1, 2), torch.zeros(1, 2), (2,))
        >>> round(distribution.log_prob(torch.zeros(1, 2)).item(), 4)  # -log(2π)
        -1.8379
    """

    __slots__ = ("action_shape", "log_std", "mean")
    mean: torch.Tensor
    log_std: torch.Tensor
    action_shape: tuple[int, ...]

    def __init__(
        self, mean: torch.Tensor, log_std: torch.Tensor, action_shape: Sequence[int]
    ) -> None:
        self._set(mean=mean, log_std=log_std, action_shape=tuple(action_shape))

    @property
    def std(self) -> torch.Tensor:
        """``[B, A]`` standard deviations."""
        return self.log_std.exp()

    def _to_actions(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.reshape(flat.shape[0], *self.action_shape)

    def _gaussian_log_prob(self, flat_actions: torch.Tensor) -> torch.Tensor:
        normalized = (flat_actions - self.mean) * torch.exp(-self.log_std)
        return (-0.5 * normalized.square() - self.log_std - _HALF_LOG_TWO_PI).sum(-1)

    @property
    def noise_shape(self) -> torch.Size:
        return self.mean.shape

    def rsample(self, uniform: torch.Tensor | None = None) -> torch.Tensor:
        """A reparameterized sample (gradients flow into mean and log_std).

        ``uniform`` (see :meth:`Distribution.sample`) becomes standard normal noise by the
        inverse CDF, ``sqrt(2) * erfinv(2u - 1)``.
        """
        if uniform is None:
            normal = torch.randn_like(self.mean)
        else:
            normal = _standard_normal(uniform, self.mean.dtype)
        return self._to_actions(self.mean + self.std * normal)

    def sample(self, uniform: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(uniform)

    def _gaussian_samples(self, actions: torch.Tensor) -> torch.Tensor:
        """The Gaussian variable ``[B, A]`` behind ``actions`` (the actions, flattened)."""
        return actions.reshape(actions.shape[0], -1).to(self.mean.dtype)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self._gaussian_log_prob(self._gaussian_samples(actions))

    def entropy(self) -> torch.Tensor:
        return (0.5 + _HALF_LOG_TWO_PI + self.log_std).sum(-1)

    def mode(self) -> torch.Tensor:
        return self._to_actions(self.mean.detach())


class TanhGaussian(DiagGaussian):
    """Gaussian squashed by tanh into ``[-1, 1]`` (rescaled to the Box bounds for the env).

    ``a = tanh(u)`` with ``u ~ N(mean, std)``; by the change of variables
    ``log p(a) = log N(u) - Σ log(1 - tanh(u)²)``, with the correction computed as
    ``2 (log 2 - u - softplus(-2u))``, which stays finite where ``tanh(u)²`` rounds to 1.
    ``log_prob`` recovers ``u = atanh(a)`` after clamping ``a`` one float epsilon inside
    ``(-1, 1)``, so saturated samples get a finite log-probability; ``sample()`` followed by
    ``log_prob`` goes through that same path, so stored and recomputed values agree.

    Entropy: a squashed Gaussian has no closed form. :meth:`entropy` returns the entropy
    of the Gaussian *before* squashing. It is an upper bound, since
    ``H(tanh U) = H(U) + E[log(1 - tanh(U)²)] <= H(U)``; it is deterministic (a
    one-sample estimate would add noise to the loss and to the logged metric); and its
    gradient flows into ``log_std`` exactly as for :class:`DiagGaussian`, so an entropy
    bonus means the same thing with or without squashing.

    Example:
        >>> import torch
        >>> distribution = TanhGaussian(torch.zeros(1, 1), torch.zeros(1, 1), (1,))
        >>> round(distribution.log_prob(torch.zeros(1, 1)).item(), 4)  # N(0; 0, 1), Jacobian 1
        -0.9189
    """

    __slots__ = ()

    def rsample(self, uniform: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tanh(super().rsample(uniform))

    def _gaussian_samples(self, actions: torch.Tensor) -> torch.Tensor:
        flat = actions.reshape(actions.shape[0], -1).to(self.mean.dtype)
        limit = 1.0 - torch.finfo(flat.dtype).eps
        return torch.atanh(flat.clamp(-limit, limit))

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        pre_tanh = self._gaussian_samples(actions)
        log_jacobian = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
        return self._gaussian_log_prob(pre_tanh) - log_jacobian.sum(-1)

    def mode(self) -> torch.Tensor:
        return torch.tanh(super().mode())


class StateDependentGaussian(DiagGaussian):
    """Generalized state-dependent exploration (gSDE, Raffin et al. 2021) over Box actions.

    The exploration noise is a linear function of the policy's features:
    ``a = mean(s) + z(s) @ W`` with ``z(s)`` the actor's last features ``[B, F]`` (detached)
    and ``W`` ``[B, F, A]`` drawn from ``N(0, weight_std²)``, one matrix per env. Held fixed
    for several steps (``sde_sample_freq``, or a whole rollout), ``W`` makes the noise a
    smooth function of the state instead of white noise on every step, which is what
    lets A2C learn Pendulum and similar tasks (rl-zoo's tuned A2C uses it there).

    For one state the action is Gaussian with variance ``z(s)² @ weight_std²`` per action
    dim, so log-probabilities and entropy are :class:`DiagGaussian`'s with that state's
    ``log_std``; only sampling differs.

    Args:
        mean: ``[B, A]`` means.
        log_std: ``[B, A]``, ``0.5 * log(z² @ weight_std² + eps)`` (built by the head).
        action_shape: the Box shape; samples are ``[B, *action_shape]``.
        features: ``[B, F]`` the detached features ``z(s)``.
        weight_std: ``[F, A]`` standard deviations of the exploration weights.

    Example:
        >>> import torch
        >>> features, weight_std = torch.tensor([[3.0, 4.0]]), torch.ones(2, 1)
        >>> log_std = 0.5 * torch.log(features.square() @ weight_std.square())
        >>> distribution = StateDependentGaussian(torch.zeros(1, 1), log_std, (1,), features, weight_std)
        >>> distribution.std.item(), distribution.noise_shape  # sqrt(3² + 4²)
        (5.0, torch.Size([1, 2, 1]))
    """

    __slots__ = ("features", "weight_std")
    features: torch.Tensor
    weight_std: torch.Tensor

    def __init__(
        self,
        mean: torch.Tensor,
        log_std: torch.Tensor,
        action_shape: Sequence[int],
        features: torch.Tensor,
        weight_std: torch.Tensor,
    ) -> None:
        super().__init__(mean, log_std, action_shape)
        self._set(features=features, weight_std=weight_std)

    @property
    def noise_shape(self) -> torch.Size:
        """``[B, F, A]``: one exploration matrix per batch row (env)."""
        return torch.Size((self.mean.shape[0], *self.weight_std.shape))

    def rsample(self, uniform: torch.Tensor | None = None) -> torch.Tensor:
        """``mean + z @ W`` with ``W = weight_std * N(0, 1)``; ``uniform`` (``[B, F, A]``)
        becomes the standard normal matrices by the inverse CDF. The same ``uniform``
        gives the same matrices, which is how a sampler holds them across steps."""
        if uniform is None:
            normal = torch.randn(self.noise_shape, dtype=self.mean.dtype, device=self.mean.device)
        else:
            normal = _standard_normal(uniform, self.mean.dtype)
        weights = self.weight_std * normal
        noise = torch.bmm(self.features.unsqueeze(1), weights).squeeze(1)
        return self._to_actions(self.mean + noise)


class ActionHead(nn.Module):
    """Maps features ``[B, F]`` to a :class:`Distribution` over one action space.

    Attributes:
        action_space: the Gymnasium space.
        linear: the output layer (policies initialize it with a small gain).
    """

    def __init__(self, action_space: gym.Space, in_features: int, out_features: int) -> None:
        super().__init__()
        self.action_space = action_space
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, features: torch.Tensor) -> Distribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def _outputs(self, features: torch.Tensor) -> torch.Tensor:
        # F.linear, not self.linear(...): a Module call costs as much as a small matmul.
        return F.linear(features, self.linear.weight, self.linear.bias)

    def to_env_actions(self, actions: torch.Tensor) -> np.ndarray:
        """Actions for ``env.step``: a numpy array of the space's dtype, ``[B, *shape]``."""
        return actions.detach().cpu().numpy().astype(self.action_space.dtype, copy=False)


class CategoricalHead(ActionHead):
    """Discrete(n) -> :class:`Categorical`."""

    def __init__(self, action_space: gym.spaces.Discrete, in_features: int) -> None:
        super().__init__(action_space, in_features, int(action_space.n))
        self.start = int(action_space.start)

    def forward(self, features: torch.Tensor) -> Categorical:
        return Categorical(self._outputs(features), self.start)


class MultiCategoricalHead(ActionHead):
    """MultiDiscrete -> :class:`MultiCategorical` (one logit per choice of every dimension)."""

    start: torch.Tensor
    padded_positions: torch.Tensor | None

    def __init__(self, action_space: gym.spaces.MultiDiscrete, in_features: int) -> None:
        sizes = [int(size) for size in np.asarray(action_space.nvec).reshape(-1)]
        super().__init__(action_space, in_features, sum(sizes))
        self.action_shape = tuple(action_space.shape)
        self.dimensions, self.max_size = len(sizes), max(sizes)
        starts = np.asarray(action_space.start).reshape(-1).astype(np.int64)
        self.register_buffer("start", torch.as_tensor(starts), persistent=False)
        # Position of every real logit inside the [K, M] padded layout; None when all
        # dimensions have the same size and a reshape is enough.
        positions = None
        if any(size != self.max_size for size in sizes):
            positions = torch.tensor(
                [k * self.max_size + i for k, size in enumerate(sizes) for i in range(size)]
            )
        self.register_buffer("padded_positions", positions, persistent=False)

    def forward(self, features: torch.Tensor) -> MultiCategorical:
        logits = self._outputs(features)
        batch = logits.shape[0]
        if self.padded_positions is not None:
            padded = logits.new_full((batch, self.dimensions * self.max_size), -math.inf)
            padded = padded.index_copy(1, self.padded_positions, logits)
            logits = padded
        logits = logits.reshape(batch, self.dimensions, self.max_size)
        return MultiCategorical(logits, self.start, self.action_shape)


class BernoulliHead(ActionHead):
    """MultiBinary -> :class:`Bernoulli`; also Discrete(2) with a single logit."""

    def __init__(
        self, action_space: gym.spaces.MultiBinary | gym.spaces.Discrete, in_features: int
    ) -> None:
        if isinstance(action_space, gym.spaces.Discrete):
            if int(action_space.n) != 2:
                raise ConfigError(
                    f"a Bernoulli head needs Discrete(2), got {action_space}; "
                    "use the Categorical head for other sizes"
                )
            super().__init__(action_space, in_features, 1)
            self.action_shape: tuple[int, ...] | None = None
            self.start = int(action_space.start)
        else:
            super().__init__(action_space, in_features, int(np.prod(action_space.shape)))
            self.action_shape = tuple(action_space.shape)
            self.start = 0

    def forward(self, features: torch.Tensor) -> Bernoulli:
        return Bernoulli(self._outputs(features), self.action_shape, self.start)


class GaussianHead(ActionHead):
    """Box -> :class:`DiagGaussian` (:class:`TanhGaussian` with ``squash=True``,
    :class:`StateDependentGaussian` with ``state_dependent=True``).

    The mean depends on the features; ``log_std`` is a state-independent parameter
    ``[A]`` (with ``state_dependent``: ``[F, A]``, the log std of the exploration weights),
    clamped to ``log_std_bounds`` here and only here. The clamp is hard: outside the
    bounds its gradient is zero, so the bounds are a guard against a diverging std (NaN
    log-probabilities, a collapsed policy), not a knob to tune the exploration with.
    """

    # Added to gSDE's variance z² @ σ²: features near zero would otherwise give a zero
    # std and an infinite log-probability (SB3 uses the same value).
    SDE_VARIANCE_EPSILON = 1e-6

    def __init__(
        self,
        action_space: gym.spaces.Box,
        in_features: int,
        *,
        squash: bool = False,
        state_dependent: bool = False,
        log_std_init: float = 0.0,
        log_std_bounds: tuple[float, float] = (-20.0, 2.0),
    ) -> None:
        action_size = int(np.prod(action_space.shape))
        if squash and state_dependent:
            raise ConfigError("squash and use_sde cannot be combined; choose one")
        super().__init__(action_space, in_features, action_size)
        low_bound, high_bound = (float(bound) for bound in log_std_bounds)
        if not low_bound < high_bound:
            raise ConfigError(
                f"log_std_bounds must be (low, high) with low < high, got {log_std_bounds}"
            )
        if not low_bound <= log_std_init <= high_bound:
            raise ConfigError(
                f"log_std_init={log_std_init} is outside log_std_bounds {log_std_bounds}"
            )
        low = np.asarray(action_space.low, dtype=np.float64)
        high = np.asarray(action_space.high, dtype=np.float64)
        if squash and not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ConfigError(
                f"squash=True needs finite Box bounds to rescale tanh actions into, got {action_space}"
            )
        self.squash, self.state_dependent = bool(squash), bool(state_dependent)
        self.action_shape = tuple(action_space.shape)
        self.log_std_bounds = (low_bound, high_bound)
        shape = (in_features, action_size) if self.state_dependent else (action_size,)
        self.log_std = nn.Parameter(torch.full(shape, float(log_std_init)))
        self._low, self._high = low, high

    def forward(self, features: torch.Tensor) -> DiagGaussian:
        mean = self._outputs(features)
        # The one place log_std is bounded: every distribution built here, for sampling
        # and for the loss alike, sees the same clamped value.
        bounded = self.log_std.clamp(*self.log_std_bounds)
        if self.state_dependent:
            # gSDE's noise scales with the features but does not train them (as SB3's
            # default): the features stay the mean's, the exploration is read off them.
            detached = features.detach()
            weight_std = bounded.exp()
            variance = detached.square() @ weight_std.square() + self.SDE_VARIANCE_EPSILON
            return StateDependentGaussian(
                mean, 0.5 * torch.log(variance), self.action_shape, detached, weight_std
            )
        log_std = bounded.expand_as(mean)
        if self.squash:
            return TanhGaussian(mean, log_std, self.action_shape)
        return DiagGaussian(mean, log_std, self.action_shape)

    def to_env_actions(self, actions: torch.Tensor) -> np.ndarray:
        """Clip (or, with squash, rescale [-1, 1] to the bounds) for the env.

        Works on a numpy copy: the sampled tensor, whose log-probability the learner
        stores and recomputes, is left as it is.
        """
        values = actions.detach().cpu().numpy().astype(np.float64)
        if self.squash:
            values = self._low + (values + 1.0) * 0.5 * (self._high - self._low)
        return np.clip(values, self._low, self._high).astype(self.action_space.dtype)


def for_action_space(
    space: gym.Space,
    in_features: int,
    *,
    squash: bool = False,
    state_dependent: bool = False,
    log_std_init: float = 0.0,
    log_std_bounds: tuple[float, float] = (-20.0, 2.0),
    discrete_as_bernoulli: bool = False,
) -> ActionHead:
    """The action head for a Gymnasium action space.

    Args:
        space: Discrete, MultiDiscrete, MultiBinary or Box (float dtype).
        in_features: size ``F`` of the feature vectors the head reads.
        squash: Box only: tanh-squash the Gaussian and rescale to the bounds.
        state_dependent: Box only: gSDE (:class:`StateDependentGaussian`).
        log_std_init: Box only: initial value of log_std.
        log_std_bounds: Box only: ``(low, high)`` clamp of log_std.
        discrete_as_bernoulli: Discrete(2) only: one logit and a Bernoulli instead of a
            two-way Categorical (the same family, one parameter fewer).

    Raises:
        ConfigError: for an unsupported space, or an option the space cannot use.

    Example:
        >>> import gymnasium as gym, torch
        >>> head = for_action_space(gym.spaces.Discrete(3), in_features=4)
        >>> head(torch.zeros(5, 4)).sample().shape
        torch.Size([5])
    """
    if squash and not isinstance(space, gym.spaces.Box):
        raise ConfigError(f"squash=True applies to Box action spaces only, got {space}")
    if state_dependent and not isinstance(space, gym.spaces.Box):
        raise ConfigError(f"use_sde applies to Box action spaces only, got {space}")
    if isinstance(space, gym.spaces.Discrete):
        if discrete_as_bernoulli:
            return BernoulliHead(space, in_features)
        return CategoricalHead(space, in_features)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return MultiCategoricalHead(space, in_features)
    if isinstance(space, gym.spaces.MultiBinary):
        return BernoulliHead(space, in_features)
    if isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating):
        return GaussianHead(
            space,
            in_features,
            squash=squash,
            state_dependent=state_dependent,
            log_std_init=log_std_init,
            log_std_bounds=log_std_bounds,
        )
    raise ConfigError(
        f"action space {space} is not supported; vecpg supports Discrete, MultiDiscrete, "
        "MultiBinary and float Box action spaces"
    )
