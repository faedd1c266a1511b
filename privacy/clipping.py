"""Per-example clipped gradient sums for DP-SGD, in one backward pass ("book-keeping").

For a linear layer ``z = a W^T + b`` and a summed loss, example ``i``'s gradient is
``g_i a_i^T`` for ``W`` and ``g_i`` for ``b``, with ``g_i = dL_i/dz_i``. Its squared norm is
``||g_i||^2 ||a_i||^2 + ||g_i||^2`` without ever forming it (Goodfellow 2015; the "ghost norm"
of Li et al. 2022), and the clipped sum is one matrix product, ``(c * G)^T A`` with
``c_i = min(1, C / ||grad_i||)`` (Bu et al. 2022). Cost: about one extra matmul per layer on
top of an ordinary backward pass, against one gradient per example for Opacus' default hooks.

Only models whose trainable layers are ``nn.Linear`` take this path. Any other model falls
back to Opacus' per-sample gradients (:class:`OpacusClippedGradients`: hooks for the layers
Opacus knows, functorch for the rest), which are exact but materialise one gradient per
example; :func:`clipped_gradients` picks the path. A model neither can handle raises
:class:`UnsupportedLayerError` rather than training without a guarantee.
"""

from __future__ import annotations

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
        ctx.tap, ctx.layer = tap, layer
        return nn.functional.linear(a, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        a, weight = ctx.saved_tensors
        ctx.tap._inputs[ctx.layer] = a
        ctx.tap._grads[ctx.layer] = grad_out
        grad_a = grad_out @ weight if ctx.needs_input_grad[0] else None
        return grad_a, None, None, None, None


class ClippedGradients:
    """Routes each linear layer through :class:`_LinearTap` during one backward pass, then
    writes the sum of per-example clipped gradients into ``.grad``.

    Use as a context manager around the forward/backward of a summed loss; the layers get
    their own ``forward`` back on exit.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = linear_layers(model)
        self._inputs: dict[nn.Linear, torch.Tensor] = {}
        self._grads: dict[nn.Linear, torch.Tensor] = {}
        for layer in self.layers:
            layer.forward = self._tapped(layer)

    def _tapped(self, layer: nn.Linear):
        def forward(a: torch.Tensor) -> torch.Tensor:
            return _LinearTap.apply(a, layer.weight, layer.bias, self, layer)

        return forward

    def per_example_norms(self) -> torch.Tensor:
        """The L2 norm of each example's full gradient (all layers together), shape (B,)."""
        sq = None
        for layer in self.layers:
            a, g = self._inputs[layer], self._grads[layer]
            if a.dim() != 2:
                raise UnsupportedLayerError(
                    f"nn.Linear input of shape {tuple(a.shape)}: the one-pass norm needs "
                    f"(batch, features) inputs"
                )
            g_sq = g.pow(2).sum(dim=1)
            term = g_sq * a.pow(2).sum(dim=1)
            if layer.bias is not None:
                term = term + g_sq
            sq = term if sq is None else sq + term
        return sq.sqrt()

    def write_clipped_sum(self, clip_norm: float) -> torch.Tensor:
        """Set each parameter's ``.grad`` to the sum over examples of its clipped gradient
        and return the per-example clip factors."""
        factors = (clip_norm / (self.per_example_norms() + 1e-12)).clamp(max=1.0)
        for layer in self.layers:
            a, g = self._inputs[layer], self._grads[layer] * factors[:, None]
            layer.weight.grad = g.T @ a
            if layer.bias is not None:
                layer.bias.grad = g.sum(dim=0)
        self._inputs.clear()
        self._grads.clear()
        return factors

    def close(self) -> None:
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
