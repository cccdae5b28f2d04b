"""Adam and RMSprop with torch.optim's update rules, on one flat parameter vector.

Why not ``torch.optim``: constructing any ``torch.optim.Optimizer`` imports
``torch._dynamo`` (its methods are wrapped by ``torch._disable_dynamo``), which costs
0.8-1.3 s of wall time on the 2-core CI machine: more than a third of the whole
CartPole-v1 solve time we aim for. These two classes implement exactly the default
(no weight decay, no amsgrad, no momentum, not centered) rules of ``torch.optim.Adam``
and ``torch.optim.RMSprop``; tests/test_learners.py checks them against torch.optim step
by step.

Why flat: a small actor-critic (CartPole's: 12 tensors) spends more time dispatching
per-tensor ops than computing. When every parameter has the same device and dtype, the
constructor moves them into one flat ``[P]`` tensor (each parameter's ``.data`` becomes a
view of it), so gradient clipping and the update are a handful of ops on one vector
instead of a few per tensor: 0.05 ms instead of 0.35 ms a step on the development VM. The
parameters must therefore not be moved or replaced after the optimizer is built (load
weights with ``load_state_dict``, which copies in place); :meth:`clip_and_step` checks.
A step where some parameter has no gradient, or after which step counts differ, takes
the per-tensor path with torch.optim's semantics (that parameter is skipped).

Both expose what the learners use: ``param_groups`` (one group, with ``"lr"``),
``zero_grad``, ``step``, ``clip_and_step``, ``state_dict`` and ``load_state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


def _flatten(params: list[torch.Tensor]) -> torch.Tensor | None:
    """Move ``params`` into one flat tensor (their ``.data`` become views); None if mixed."""
    if len({(p.device, p.dtype) for p in params}) != 1:
        return None
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    offset = 0
    for p in params:
        p.data = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return flat


def _views(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    views, offset = [], 0
    for p in like:
        views.append(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
    return views


class _Optimizer:
    def __init__(self, parameters: Iterable[torch.Tensor], **hyperparameters: Any) -> None:
        params = list(parameters)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        self.param_groups = [{"params": params, **hyperparameters}]
        self.step_count = 0
        self.parameter_steps = [0] * len(params)
        self._flat = _flatten(params)
        self._pointers = [p.data_ptr() for p in params]
        self._flat_buffers: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, list[torch.Tensor]] = {}
        for name in self._buffer_names:
            if self._flat is not None:
                self._flat_buffers[name] = torch.zeros_like(self._flat)
                self.buffers[name] = _views(self._flat_buffers[name], params)
            else:
                self.buffers[name] = [
                    torch.zeros_like(p, memory_format=torch.preserve_format) for p in params
                ]

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

    def gradient_buffer(self) -> tuple[torch.Tensor, list[torch.Tensor]] | None:
        """A new zero ``[P]`` tensor laid out like the flat parameters, and one view of it
        per parameter (in order), for gradients computed without autograd (see
        vecpg/backprop.py and :meth:`clip_and_step`); None when the parameters are not flat.
        """
        if self._flat is None:
            return None
        gradient = torch.zeros_like(self._flat)
        return gradient, _views(gradient, self.params)

    def _check_not_moved(self) -> None:
        if [p.data_ptr() for p in self.params] != self._pointers:
            raise RuntimeError(
                "the optimizer's parameters were moved or replaced after it was built "
                "(build the optimizer after .to(device); load weights with load_state_dict)"
            )

    def _flat_gradient(self) -> torch.Tensor | None:
        """All gradients as one new ``[P]`` tensor, or None when the flat path does not apply."""
        if self._flat is None or len(set(self.parameter_steps)) != 1:
            return None
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            return None
        self._check_not_moved()
        return torch.cat([g.reshape(-1) for g in grads if g is not None])

    @torch.no_grad()
    def step(self) -> None:
        """One update from the parameters' ``.grad`` (None gradients are skipped)."""
        flat_gradient = self._flat_gradient()
        if flat_gradient is not None:
            self._advance(range(len(self.params)))
            self._step_flat(flat_gradient)
            return
        params, grads, indices = self._with_grads()
        if params:
            self._advance(indices)
            self._step_tensors(params, grads, indices)

    @torch.no_grad()
    def clip_and_step(self, max_norm: float, gradient: torch.Tensor | None = None) -> torch.Tensor:
        """Clip the global gradient norm to ``max_norm`` (``inf``: no clipping), then step.

        Args:
            max_norm: the largest gradient norm kept.
            gradient: a flat ``[P]`` gradient of every parameter (from
                :meth:`gradient_buffer`, scaled in place), used instead of the
                parameters' ``.grad``.

        Returns the norm before clipping, as a tensor (no device synchronization). The
        clipping is ``torch.nn.utils.clip_grad_norm_``'s: gradients are scaled by
        ``min(1, max_norm / (norm + 1e-6))``.
        """
        if gradient is not None:
            if self._flat is None or gradient.shape != self._flat.shape:
                raise ValueError("a flat gradient needs flat parameters of the same size")
            self._check_not_moved()
            if len(set(self.parameter_steps)) != 1:  # per-parameter bias corrections
                for p, view in zip(self.params, _views(gradient, self.params), strict=True):
                    p.grad = view
                gradient = None
            flat_gradient: torch.Tensor | None = gradient
        else:
            flat_gradient = self._flat_gradient()
        if flat_gradient is None:
            params = [p for p in self.params if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            self.step()
            return norm.detach()
        norm = torch.linalg.vector_norm(flat_gradient)
        if math.isfinite(max_norm):
            flat_gradient.mul_((max_norm / (norm + 1e-6)).clamp_(max=1.0))
        self._advance(range(len(self.params)))
        self._step_flat(flat_gradient)
        return norm

    def _advance(self, indices: Iterable[int]) -> None:
        self.step_count += 1
        for i in indices:
            self.parameter_steps[i] += 1

    def _step_flat(self, gradient: torch.Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    def _step_tensors(
        self, params: list[torch.Tensor], grads: list[torch.Tensor], indices: list[int]
    ) -> None:  # pragma: no cover
        raise NotImplementedError

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

    def _step_flat(self, gradient: torch.Tensor) -> None:
        assert self._flat is not None
        group = self.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        step = self.parameter_steps[0]
        exp_avg, exp_avg_sq = self._flat_buffers["exp_avg"], self._flat_buffers["exp_avg_sq"]
        exp_avg.lerp_(gradient, 1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(gradient, gradient, value=1.0 - beta2)
        denominator = exp_avg_sq.sqrt().div_(math.sqrt(1.0 - beta2**step)).add_(eps)
        self._flat.addcdiv_(exp_avg, denominator, value=-lr / (1.0 - beta1**step))

    def _step_tensors(
        self, params: list[torch.Tensor], grads: list[torch.Tensor], indices: list[int]
    ) -> None:
        group = self.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        # Bias corrections depend on each parameter's own step count (a parameter without
        # a gradient does not advance, as in torch.optim).
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

    def _step_flat(self, gradient: torch.Tensor) -> None:
        assert self._flat is not None
        group = self.param_groups[0]
        square_avg = self._flat_buffers["square_avg"]
        square_avg.mul_(group["alpha"]).addcmul_(gradient, gradient, value=1.0 - group["alpha"])
        denominator = square_avg.sqrt().add_(group["eps"])
        self._flat.addcdiv_(gradient, denominator, value=-group["lr"])

    def _step_tensors(
        self, params: list[torch.Tensor], grads: list[torch.Tensor], indices: list[int]
    ) -> None:
        group = self.param_groups[0]
        lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
        square_avg = [self.buffers["square_avg"][i] for i in indices]
        torch._foreach_mul_(square_avg, alpha)
        torch._foreach_addcmul_(square_avg, grads, grads, value=1.0 - alpha)
        averages = torch._foreach_sqrt(square_avg)
        torch._foreach_add_(averages, eps)
        torch._foreach_addcdiv_(params, grads, averages, value=-lr)
