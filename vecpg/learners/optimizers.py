"""Adam and RMSprop through torch.optim's functional API, without ``torch.optim.Optimizer``.

``torch.optim.Optimizer`` imports ``torch._dynamo`` when it is built and on every
``step`` (``add_param_group`` and the step wrapper are marked for dynamo even when nothing
is compiled): about a thousand modules, 0.7-0.9 s on a 2-vCPU machine, an eighth of the
time a ``vecpg train`` process needs to solve CartPole (benchmarks/TRAINING.md). The
update itself is torch's: :func:`torch.optim.adam.adam` and
:func:`torch.optim.rmsprop.rmsprop` are the public functional forms that the classes call,
with the same kernels (fused Adam, foreach RMSprop) and none of that import. The classes
here hold what the functional forms take, the per-parameter state and the
hyperparameters, and write no update arithmetic of their own.

They keep the part of ``torch.optim.Optimizer``'s interface that vecpg uses:
``param_groups`` (one group; its ``lr`` is read on each step, so annealing sets it there),
``state`` (per parameter, torch's names), ``zero_grad``, ``step``, ``state_dict`` and
``load_state_dict``. Their state dicts are torch's: one loads into ``torch.optim.Adam`` or
``torch.optim.RMSprop`` and back, so checkpoints do not depend on which wrote them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.adam import adam
from torch.optim.rmsprop import rmsprop


class FunctionalOptimizer:
    """One parameter group, its per-parameter state, and an update from torch.optim.

    Subclasses name their state tensors (``moments``) and call their functional update in
    ``_update``.
    """

    moments: tuple[str, ...] = ()

    def __init__(self, parameters: Iterable[torch.Tensor], hyperparameters: dict[str, Any]):
        params = list(parameters)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        self.param_groups: list[dict[str, Any]] = [{"params": params, **hyperparameters}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        """Drop every gradient (``set_to_none``, torch's default)."""
        for parameter in self.param_groups[0]["params"]:
            parameter.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of the parameters that have a gradient (the others are left alone)."""
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        for parameter in params:
            if parameter not in self.state:  # on its first gradient, as in torch
                self.state[parameter] = self._zero_state(parameter)
        states = [self.state[p] for p in params]
        grads = [p.grad for p in params]
        self._update(params, grads, states, group)

    def _zero_state(self, parameter: torch.Tensor) -> dict[str, torch.Tensor]:
        # Step counts are CPU scalars, as in torch, except where a fused kernel reads them.
        fused = self.param_groups[0].get("fused")
        device = parameter.device if fused else torch.device("cpu")
        state = {"step": torch.zeros((), dtype=torch.float32, device=device)}
        for name in self.moments:
            state[name] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
        return state

    def _update(
        self,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        states: list[dict[str, torch.Tensor]],
        group: dict[str, Any],
    ) -> None:  # pragma: no cover
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: ``{"state": {index: {...}}, "param_groups": [{..., "params"}]}``."""
        params = self.param_groups[0]["params"]
        hyperparameters = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {
            "state": {i: dict(self.state[p]) for i, p in enumerate(params) if p in self.state},
            "param_groups": [{**hyperparameters, "params": list(range(len(params)))}],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`'s layout (or torch.optim's), copying every tensor.

        The saved hyperparameters replace the current ones, as in torch.optim; tensors go
        to their parameter's device, the moments in its dtype. A state dict that does not
        fit is refused before anything changes.
        """
        group = self.param_groups[0]
        params = group["params"]
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != 1 or len(saved_groups[0]["params"]) != len(params):
            raise ValueError(
                f"the optimizer state is for {[len(g['params']) for g in saved_groups]} "
                f"parameters in groups, not one group of {len(params)}"
            )
        saved_state = state_dict["state"]
        loaded = {}
        for index, parameter in zip(saved_groups[0]["params"], params, strict=True):
            if index not in saved_state:
                continue
            state = loaded[parameter] = self._zero_state(parameter)
            for name, value in saved_state[index].items():
                if name not in state:
                    raise ValueError(
                        f"optimizer state {name!r} is not one of {type(self).__name__}'s "
                        f"({', '.join(state)})"
                    )
                state[name] = value.to(
                    device=state[name].device, dtype=state[name].dtype, copy=True
                )
        self.state = loaded
        for key, value in saved_groups[0].items():
            if key in group and key != "params":
                group[key] = value


class Adam(FunctionalOptimizer):
    """``torch.optim.Adam``'s update (betas 0.9, 0.999; no weight decay).

    Fused (one kernel over every parameter tensor) where the parameters are float tensors
    on a CPU or CUDA device, else torch's ``foreach`` kernels: a CartPole-sized policy is
    a dozen small tensors, and a per-tensor loop of small ops costs more than the
    arithmetic (benchmarks/TRAINING.md).
    """

    moments = ("exp_avg", "exp_avg_sq")

    def __init__(self, parameters: Iterable[torch.Tensor], lr: float, eps: float):
        params = list(parameters)
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        super().__init__(
            params,
            {
                "lr": lr,
                "betas": (0.9, 0.999),
                "eps": eps,
                "weight_decay": 0.0,
                "amsgrad": False,
                "maximize": False,
                "foreach": None if fused else True,
                "fused": fused or None,
            },
        )

    def _update(self, params, grads, states, group):
        beta1, beta2 = group["betas"]
        adam(
            params,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            [s["step"] for s in states],
            foreach=group["foreach"],
            fused=group["fused"],
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )


class RMSprop(FunctionalOptimizer):
    """``torch.optim.RMSprop``'s update with torch's ``foreach`` kernels (no momentum)."""

    moments = ("square_avg",)

    def __init__(self, parameters: Iterable[torch.Tensor], lr: float, alpha: float, eps: float):
        super().__init__(
            parameters,
            {
                "lr": lr,
                "alpha": alpha,
                "eps": eps,
                "weight_decay": 0.0,
                "momentum": 0.0,
                "centered": False,
                "maximize": False,
                "foreach": True,
            },
        )

    def _update(self, params, grads, states, group):
        rmsprop(
            params,
            grads,
            [s["square_avg"] for s in states],
            [],
            [],
            [s["step"] for s in states],
            foreach=True,
            lr=group["lr"],
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum=0.0,
            centered=False,
        )
