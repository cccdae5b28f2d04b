"""Adam and RMSprop with torch.optim's update rules, without torch.optim's import cost.

Why not ``torch.optim``: constructing any ``torch.optim.Optimizer`` imports
``torch._dynamo`` (its methods are wrapped by ``torch._disable_dynamo``), which costs
0.8-1.3 s of wall time on the 2-core CI machine: more than a third of the whole
CartPole-v1 solve time we aim for. These two classes implement exactly the default
(no weight decay, no amsgrad, no momentum, not centered) rules of ``torch.optim.Adam``
and ``torch.optim.RMSprop`` with ``torch._foreach`` ops; tests/test_learners.py checks
them against torch.optim step by step.

Both expose what the learners use: ``param_groups`` (one group, with ``"lr"``),
``zero_grad``, ``step``, ``state_dict`` and ``load_state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


class _Optimizer:
    def __init__(self, parameters: Iterable[torch.Tensor], **hyperparameters: Any) -> None:
        params = list(parameters)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        self.param_groups = [{"params": params, **hyperparameters}]
        self.step_count = 0
        self.parameter_steps = [0] * len(params)
        self.buffers: dict[str, list[torch.Tensor]] = {
            name: [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
            for name in self._buffer_names
        }

    _buffer_names: tuple[str, ...] = ()

    @property
    def params(self) -> list[torch.Tensor]:
        return self.param_groups[0]["params"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def _with_grads(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
        indices = [i for i, p in enumerate(self.params) if p.grad is not None]
        grads = [self.params[i].grad for i in indices]
        return [self.params[i] for i in indices], [g for g in grads if g is not None], indices

    def state_dict(self) -> dict[str, Any]:
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {
            "type": type(self).__name__,
            "group": group,
            "step": self.step_count,
            "parameter_steps": list(self.parameter_steps),
            "buffers": {k: [b.detach().clone() for b in v] for k, v in self.buffers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("type") != type(self).__name__:
            raise ValueError(
                f"optimizer state is for {state.get('type')}, not {type(self).__name__}"
            )
        for name, saved in state["buffers"].items():
            if len(saved) != len(self.buffers[name]) or any(
                s.shape != b.shape for s, b in zip(saved, self.buffers[name], strict=True)
            ):
                raise ValueError(f"optimizer state {name!r} does not match the parameters")
            for buffer, value in zip(self.buffers[name], saved, strict=True):
                buffer.copy_(value)
        self.param_groups[0].update(state["group"])
        self.step_count = int(state["step"])
        self.parameter_steps = list(
            state.get("parameter_steps", [self.step_count] * len(self.params))
        )


class Adam(_Optimizer):
    """``torch.optim.Adam(params, lr, betas, eps)`` without weight decay or amsgrad.

    Example:
        >>> weight = torch.nn.Parameter(torch.tensor([1.0]))
        >>> optimizer = Adam([weight], lr=0.1)
        >>> weight.grad = torch.tensor([2.0])
        >>> optimizer.step()
        >>> round(weight.item(), 4)  # the first Adam step moves by lr * sign(grad)
        0.9
    """

    _buffer_names = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        parameters: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(parameters, lr=lr, betas=tuple(betas), eps=eps)

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        params, grads, indices = self._with_grads()
        if not params:
            return
        self.step_count += 1
        for i in indices:
            self.parameter_steps[i] += 1
        # Bias corrections depend on each parameter's own step count (a parameter without
        # a gradient does not advance, as in torch.optim); usually there is one group.
        by_step: dict[int, list[int]] = {}
        for position, i in enumerate(indices):
            by_step.setdefault(self.parameter_steps[i], []).append(position)
        for step, positions in by_step.items():
            group_params = [params[k] for k in positions]
            group_grads = [grads[k] for k in positions]
            exp_avg = [self.buffers["exp_avg"][indices[k]] for k in positions]
            exp_avg_sq = [self.buffers["exp_avg_sq"][indices[k]] for k in positions]
            torch._foreach_lerp_(exp_avg, group_grads, 1.0 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, group_grads, group_grads, value=1.0 - beta2)
            bias_correction1 = 1.0 - beta1**step
            bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
            denominators = torch._foreach_sqrt(exp_avg_sq)
            torch._foreach_div_(denominators, bias_correction2_sqrt)
            torch._foreach_add_(denominators, eps)
            torch._foreach_addcdiv_(
                group_params, exp_avg, denominators, value=-lr / bias_correction1
            )


class RMSprop(_Optimizer):
    """``torch.optim.RMSprop(params, lr, alpha, eps)``: not centered, no momentum.

    Example:
        >>> weight = torch.nn.Parameter(torch.tensor([1.0]))
        >>> optimizer = RMSprop([weight], lr=0.1, alpha=0.0, eps=0.0)
        >>> weight.grad = torch.tensor([2.0])
        >>> optimizer.step()
        >>> round(weight.item(), 4)
        0.9
    """

    _buffer_names = ("square_avg",)

    def __init__(
        self,
        parameters: Iterable[torch.Tensor],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(parameters, lr=lr, alpha=alpha, eps=eps)

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
        params, grads, indices = self._with_grads()
        if not params:
            return
        self.step_count += 1
        square_avg = [self.buffers["square_avg"][i] for i in indices]
        torch._foreach_mul_(square_avg, alpha)
        torch._foreach_addcmul_(square_avg, grads, grads, value=1.0 - alpha)
        averages = torch._foreach_sqrt(square_avg)
        torch._foreach_add_(averages, eps)
        torch._foreach_addcdiv_(params, grads, averages, value=-lr)
