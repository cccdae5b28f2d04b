"""Hand-written backpropagation for MLP actor-critics: a learner's gradient step without autograd.

Why: a CartPole-sized policy (two 64-64 MLPs) on a 256-sample minibatch is bound by
per-operation overhead on a CPU, not by arithmetic, and autograd adds to every operation
(recording the graph, then running its engine). Computing the same gradients with a
fixed list of tensor operations, written straight into the optimizer's flat gradient
vector, made one PPO gradient step 1.9-2.3x faster on the 2-core development VM
(interleaved medians, rl-zoo CartPole settings; see benchmarks/TRAINING.md).

What it covers (:meth:`ManualBackprop.for_policy` says why not, otherwise): an
:class:`~vecpg.policies.ActorCritic` whose observation encoders have no parameters (every
observation space but images), whose MLPs use tanh or relu, with a separate or shared
trunk, and a Categorical, diagonal-Gaussian or tanh-Gaussian action head, trained by a
flat-parameter optimizer (:mod:`vecpg.learners.optim`). Everything else uses autograd, and
so can everything (``--no-manual-backprop``).

The learner supplies the loss's derivatives with respect to what the policy computed;
each module owns the derivative of its own forward formula, beside it:
:meth:`vecpg.networks.MLP.backward`, :func:`vecpg.networks.linear_backward`, the heads'
``backward`` and the distributions' ``backward`` in :mod:`vecpg.distributions`.
``tests/test_backprop.py`` checks every supported combination against autograd.

``B`` is the batch size (a minibatch of the flattened ``[T*N]`` rollout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from vecpg.distributions import Distribution
from vecpg.networks import linear_backward
from vecpg.policies import ActorCritic

__all__ = ["ManualBackprop", "PolicyForward"]


@dataclass
class PolicyForward:
    """One forward pass of the policy over a batch, with what the backward pass needs.

    Attributes:
        log_probs: ``[B]`` log-probabilities of the batch's actions.
        values: ``[B]`` state values.
        entropies: ``[B]`` entropies, or None when not asked for.
        distribution: the action distribution.
        actions: the ``[B, ...]`` actions.
        actor_outputs: the actor MLP's saved outputs (see MLP.forward_saving).
        critic_outputs: the critic MLP's, or None with a shared trunk.
    """

    log_probs: torch.Tensor
    values: torch.Tensor
    entropies: torch.Tensor | None
    distribution: Distribution
    actions: torch.Tensor
    actor_outputs: list[torch.Tensor]
    critic_outputs: list[torch.Tensor] | None


class ManualBackprop:
    """Forward and backward passes of an MLP ActorCritic without autograd.

    Build it with :meth:`for_policy`. Per gradient step::

        forward = backprop.forward(observations, actions, entropy=True)
        # the learner computes its loss from forward.log_probs / values / entropies, and
        # its derivatives with respect to them
        gradient = backprop.backward(forward, grad_log_probs, grad_values, grad_entropy)
        optimizer.clip_and_step(max_norm, gradient)

    Args:
        policy: the policy (see :meth:`for_policy` for what is supported).
        gradient: a ``[P]`` tensor laid out like the optimizer's flat parameters.
        views: one view of ``gradient`` per parameter, in ``policy.parameters()`` order.
    """

    def __init__(
        self, policy: ActorCritic, gradient: torch.Tensor, views: list[torch.Tensor]
    ) -> None:
        self.policy = policy
        self.gradient = gradient
        self._views = {id(p): view for p, view in zip(policy.parameters(), views, strict=True)}

    @staticmethod
    def unsupported_reason(policy: ActorCritic) -> str | None:
        """Why ``policy`` needs autograd, or None when this class can train it."""
        encoders = [policy.actor_encoder, policy.critic_encoder]
        if any(any(True for _ in e.parameters()) for e in encoders if e is not None):
            return "the observation encoder has parameters (images)"
        bodies = [policy.actor_body, policy.critic_body]
        if not all(body.has_backward for body in bodies if body is not None):
            return "the MLP activation has no hand-written derivative (tanh and relu do)"
        if not policy.action_head.has_backward:
            return f"{type(policy.action_head).__name__} has no hand-written backward pass"
        if any(not p.requires_grad for p in policy.parameters()):
            return "some parameters are frozen"
        return None

    @classmethod
    def for_policy(cls, policy: ActorCritic, optimizer: Any) -> ManualBackprop | None:
        """A ManualBackprop for ``policy``, or None when autograd must be used instead.

        Args:
            policy: the policy being trained.
            optimizer: its optimizer; must keep the parameters in one flat vector
                (``optimizer.gradient_buffer()`` not None) in ``policy.parameters()`` order.
        """
        if cls.unsupported_reason(policy) is not None:
            return None
        buffer = optimizer.gradient_buffer()
        if buffer is None:
            return None
        gradient, views = buffer
        optimized = optimizer.param_groups[0]["params"]
        parameters = list(policy.parameters())
        if len(optimized) != len(parameters) or any(
            a is not b for a, b in zip(optimized, parameters, strict=True)
        ):
            return None
        return cls(policy, gradient, views)

    def _gradient_of(self, parameter: torch.Tensor) -> torch.Tensor:
        return self._views[id(parameter)]

    @torch.no_grad()
    def forward(
        self, observations: Any, actions: torch.Tensor, *, entropy: bool = True
    ) -> PolicyForward:
        """The policy over ``[B, ...]`` observations: the same values as
        :meth:`ActorCritic.evaluate`, no graph, activations kept for :meth:`backward`."""
        policy = self.policy
        actor_outputs = policy.actor_body.forward_saving(policy.actor_encoder.forward(observations))
        distribution = policy.action_head.forward(actor_outputs[-1])
        critic_outputs = None
        if policy.critic_body is not None and policy.critic_encoder is not None:
            critic_outputs = policy.critic_body.forward_saving(
                policy.critic_encoder.forward(observations)
            )
            critic_features = critic_outputs[-1]
        else:
            critic_features = actor_outputs[-1]
        value_head = policy.value_head
        values = F.linear(critic_features, value_head.weight, value_head.bias).squeeze(-1)
        return PolicyForward(
            log_probs=distribution.log_prob(actions),
            values=values,
            entropies=distribution.entropy() if entropy else None,
            distribution=distribution,
            actions=actions,
            actor_outputs=actor_outputs,
            critic_outputs=critic_outputs,
        )

    @torch.no_grad()
    def backward(
        self,
        forward: PolicyForward,
        grad_log_probs: torch.Tensor,
        grad_values: torch.Tensor,
        grad_entropy: float = 0.0,
    ) -> torch.Tensor:
        """The gradient of ``L`` with respect to every parameter, as one flat ``[P]`` tensor
        in the optimizer's layout (overwritten by the next call), where

            dL/d log_probs[b] = grad_log_probs[b],  dL/d values[b] = grad_values[b],
            dL/d entropies[b] = grad_entropy (the same for every b).

        Args:
            forward: :meth:`forward`'s result for this batch.
            grad_log_probs: ``[B]``.
            grad_values: ``[B]``.
            grad_entropy: a float (an entropy bonus ``-c · mean(H)`` gives ``-c / B``).
        """
        policy, gradient_of = self.policy, self._gradient_of
        actor_outputs, critic_outputs = forward.actor_outputs, forward.critic_outputs
        grad_actor = policy.action_head.backward(
            actor_outputs[-1],
            forward.distribution,
            forward.actions,
            grad_log_probs,
            grad_entropy,
            gradient_of,
        )
        critic_features = actor_outputs[-1] if critic_outputs is None else critic_outputs[-1]
        grad_critic = linear_backward(
            critic_features, grad_values.unsqueeze(-1), policy.value_head, gradient_of
        )
        assert grad_critic is not None
        if critic_outputs is None:  # shared trunk: both heads read the same features
            policy.actor_body.backward(actor_outputs, grad_actor.add_(grad_critic), gradient_of)
        else:
            policy.actor_body.backward(actor_outputs, grad_actor, gradient_of)
            assert policy.critic_body is not None
            policy.critic_body.backward(critic_outputs, grad_critic, gradient_of)
        return self.gradient
