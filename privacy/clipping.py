"""Per-example clipped gradient sums for DP-SGD, in one backward pass ("book-keeping").

For a linear layer ``z = a W^T + b`` and a summed loss, example ``i``'s gradient is
``g_i a_i^T`` for ``W`` and ``g_i`` for ``b``, with ``g_i = dL_i/dz_i``. Its squared norm is
``||g_i||^2 ||a_i||^2 + ||g_i||^2`` without ever forming it (Goodfellow 2015; the "ghost norm"
of Li et al. 2022), and the clipped sum is one matrix product, ``(c * G)^T A`` with
``c_i = min(1, C / ||grad_i||)`` (Bu et al. 2022). Cost: about one extra matmul per layer on
top of an ordinary backward pass, against one gradient per example for Opacus' default hooks.

A layer applied several times, or a weight shared by several layers (tied weights), is
exact too: each use is recorded and a shared weight's per-example norm is that of the sum
over its uses (see :class:`ClippedGradients`); a tapped parameter used outside its layer's
``forward`` is refused, since that part of its gradient would escape the clip.

Only models whose trainable layers are ``nn.Linear`` take this path. Any other model falls
back to Opacus' per-sample gradients (:class:`OpacusClippedGradients`: hooks for the layers
Opacus knows, functorch for the rest), which are exact but materialise one gradient per
example; :func:`clipped_gradients` picks the path. A model neither can handle raises
:class:`UnsupportedLayerError` rather than training without a guarantee.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class UnsupportedLayerError(TypeError):
    """A trainable layer whose per-example gradient norm this module cannot compute."""


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The model's trainable layers, all of which must be ``nn.Linear``."""
    layers = []
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if not isinstance(module, nn.Linear):
            raise UnsupportedLayerError(
                f"layer {name!r} ({type(module).__name__}) has trainable parameters but no "
                f"per-example clipping rule; fedcore's DP-SGD supports nn.Linear layers"
            )
        layers.append(module)
    return layers


class _LinearTap(torch.autograd.Function):
    """``F.linear`` whose backward hands the layer's input and output gradient to a
    :class:`ClippedGradients` and skips the weight gradient, which ``write_clipped_sum``
    computes once, already clipped (instead of autograd computing it and us again)."""

    @staticmethod
    def forward(ctx, a, weight, bias, tap, layer):
        ctx.save_for_backward(a, weight)
        ctx.tap, ctx.layer, ctx.forward_pass = tap, layer, tap._forward_pass
        return nn.functional.linear(a, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        a, weight = ctx.saved_tensors
        ctx.tap._uses.append(_Use(ctx.layer, a, grad_out, ctx.forward_pass))
        grad_a = grad_out @ weight if ctx.needs_input_grad[0] else None
        return grad_a, None, None, None, None


@dataclass(frozen=True)
class _Use:
    """One application of a linear layer in the backward pass just run: its input ``a``
    and output gradient ``g``, both (batch, features)."""

    layer: nn.Linear
    a: torch.Tensor
    g: torch.Tensor
    forward_pass: int


class ClippedGradients:
    """Routes each linear layer through :class:`_LinearTap` during one backward pass, then
    writes the sum of per-example clipped gradients into ``.grad``.

    Tied weights are exact: a layer applied several times, or one ``Parameter`` held by
    several layers, gets example ``i``'s gradient ``sum_u g_ui a_ui^T`` over its uses ``u``,
    whose squared norm is ``sum_{u,v} (g_ui . g_vi)(a_ui . a_vi)`` (the ghost norm of a sum).
    A trainable parameter of a tapped layer that receives a gradient some other way (used
    outside its layer's ``forward``) is refused: that part of its gradient would escape
    clipping. Use as a context manager around the forward/backward of a summed loss; the
    layers get their own ``forward`` back on exit.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = linear_layers(model)
        self._uses: list[_Use] = []
        self._forward_pass = 0
        self._untapped: set[str] = set()
        names = {p: name for name, p in model.named_parameters()}
        self._hooks = [model.register_forward_pre_hook(self._count_forward_pass)]
        for layer in self.layers:
            layer.forward = self._tapped(layer)
            for p in self._trainable(layer):
                self._hooks.append(p.register_hook(self._flag_untapped(names[p])))

    @staticmethod
    def _trainable(layer: nn.Linear) -> list[torch.Tensor]:
        return [p for p in (layer.weight, layer.bias) if p is not None and p.requires_grad]

    def _count_forward_pass(self, module: nn.Module, args: object) -> None:
        self._forward_pass += 1

    def _flag_untapped(self, name: str):
        # The tap returns no gradient for weights and biases, so autograd hands one to a
        # tapped parameter only when it was used outside its layer's forward.
        def hook(grad: torch.Tensor | None) -> None:
            if grad is not None:
                self._untapped.add(name)

        return hook

    def _tapped(self, layer: nn.Linear):
        def forward(a: torch.Tensor) -> torch.Tensor:
            return _LinearTap.apply(a, layer.weight, layer.bias, self, layer)

        return forward

    def _uses_by_parameter(self) -> tuple[dict, dict]:
        """The recorded uses grouped by the trainable weight and bias they apply, after
        checking that they describe one batch seen by one forward pass."""
        if self._untapped:
            raise UnsupportedLayerError(
                f"parameter(s) {sorted(self._untapped)} of nn.Linear layers received gradient "
                f"outside their layer's forward (a functional or tied use); the one-pass "
                f"clipping cannot bound that part of the per-example gradient"
            )
        if not self._uses:
            raise RuntimeError(
                "no backward pass through the model since the last write_clipped_sum"
            )
        if len({u.forward_pass for u in self._uses}) > 1:
            raise RuntimeError(
                "gradients of more than one forward pass were recorded: run one backward per "
                "write_clipped_sum, on the output of a single forward pass"
            )
        for u in self._uses:
            if u.a.dim() != 2:
                raise UnsupportedLayerError(
                    f"nn.Linear input of shape {tuple(u.a.shape)}: the one-pass norm needs "
                    f"(batch, features) inputs"
                )
        sizes = sorted({u.a.shape[0] for u in self._uses})
        if len(sizes) > 1:
            raise UnsupportedLayerError(
                f"nn.Linear layers saw batches of sizes {sizes} in one forward pass: rows of "
                f"different uses are not the same examples"
            )
        weights: dict[torch.Tensor, list[_Use]] = {}
        biases: dict[torch.Tensor, list[_Use]] = {}
        for u in self._uses:
            if u.layer.weight.requires_grad:
                weights.setdefault(u.layer.weight, []).append(u)
            if u.layer.bias is not None and u.layer.bias.requires_grad:
                biases.setdefault(u.layer.bias, []).append(u)
        return weights, biases

    def per_example_norms(self) -> torch.Tensor:
        """The L2 norm of each example's full gradient (all layers together), shape (B,)."""
        weights, biases = self._uses_by_parameter()
        sq = self._uses[0].g.new_zeros(self._uses[0].a.shape[0])
        for uses in weights.values():
            for u in uses:
                for v in uses:
                    sq = sq + (u.g * v.g).sum(dim=1) * (u.a * v.a).sum(dim=1)
        for uses in biases.values():
            sq = sq + sum(u.g for u in uses).pow(2).sum(dim=1)
        return sq.sqrt()

    def write_clipped_sum(self, clip_norm: float) -> torch.Tensor:
        """Set each parameter's ``.grad`` to the sum over examples of its clipped gradient
        and return the per-example clip factors."""
        factors = (clip_norm / (self.per_example_norms() + 1e-12)).clamp(max=1.0)
        weights, biases = self._uses_by_parameter()
        for weight, uses in weights.items():
            weight.grad = sum((u.g * factors[:, None]).T @ u.a for u in uses)
        for bias, uses in biases.items():
            bias.grad = sum((u.g * factors[:, None]).sum(dim=0) for u in uses)
        self._uses.clear()
        return factors

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        for layer in self.layers:
            layer.__dict__.pop("forward", None)  # back to nn.Linear.forward

    def __enter__(self) -> ClippedGradients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OpacusClippedGradients:
    """The same interface as :class:`ClippedGradients` for any model Opacus supports: its
    ``GradSampleModule`` hooks give each example's gradient, which is clipped and summed here."""

    def __init__(self, model: nn.Module) -> None:
        from opacus import GradSampleModule

        self.params = [p for p in model.parameters() if p.requires_grad]
        try:
            self._module = GradSampleModule(model, batch_first=True, loss_reduction="sum")
        except NotImplementedError as err:
            raise UnsupportedLayerError(f"no per-example gradients for this model: {err}") from None

    def per_example_norms(self) -> torch.Tensor:
        """The L2 norm of each example's full gradient, shape (B,)."""
        missing = [i for i, p in enumerate(self.params) if getattr(p, "grad_sample", None) is None]
        if missing:
            raise UnsupportedLayerError(
                f"Opacus computed no per-example gradient for {len(missing)} trainable "
                f"parameter(s); they would be trained without clipping"
            )
        sq = sum(p.grad_sample.flatten(1).pow(2).sum(dim=1) for p in self.params)
        return sq.sqrt()

    def write_clipped_sum(self, clip_norm: float) -> torch.Tensor:
        """Set each parameter's ``.grad`` to the sum of its clipped per-example gradients."""
        factors = (clip_norm / (self.per_example_norms() + 1e-12)).clamp(max=1.0)
        for p in self.params:
            p.grad = torch.einsum("b,b...->...", factors, p.grad_sample)
            p.grad_sample = None
        return factors

    def close(self) -> None:
        self._module._close()

    def __enter__(self) -> OpacusClippedGradients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def clipped_gradients(model: nn.Module) -> ClippedGradients | OpacusClippedGradients:
    """The fastest exact per-example clipping for ``model``: the one-pass path when every
    trainable layer is ``nn.Linear``, Opacus' per-sample gradients otherwise."""
    try:
        return ClippedGradients(model)
    except UnsupportedLayerError:
        return OpacusClippedGradients(model)
