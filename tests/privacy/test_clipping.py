"""One-pass per-example clipping against brute-force and Opacus references."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus import GradSampleModule
from torch import nn
from torch.nn import functional as F

from privacy.clipping import (
    ClippedGradients,
    OpacusClippedGradients,
    UnsupportedLayerError,
    clipped_gradients,
)


def _mlp(d, h, k, seed):
    torch.manual_seed(seed)  # test-local: model weights only
    return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, k))


def _batch(b, d, k, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g) * 3, torch.randint(0, k, (b,), generator=g)


def _brute_force(model, x, y, clip):
    """Clip each example's gradient, computed one example at a time, and sum (over the
    trainable parameters, in ``model.parameters()`` order)."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    norms = []
    for i in range(len(y)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1], reduction="sum").backward()
        grads = [p.grad.clone() for p in params]
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        norms.append(norm)
        factor = min(1.0, clip / (norm.item() + 1e-12))
        total = [t + factor * g for t, g in zip(total, grads, strict=True)]
    return total, torch.stack(norms)


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 12),
    d=st.integers(1, 9),
    h=st.integers(1, 8),
    k=st.integers(2, 5),
    clip=st.floats(0.01, 10.0),
    seed=st.integers(0, 1000),
)
def test_one_pass_clipped_sum_equals_brute_force(b, d, h, k, clip, seed):
    model = _mlp(d, h, k, seed)
    x, y = _batch(b, d, k, seed)
    expected, expected_norms = _brute_force(model, x, y, clip)
    model.zero_grad()
    with ClippedGradients(model) as clipper:
        F.cross_entropy(model(x), y, reduction="sum").backward()
        torch.testing.assert_close(
            clipper.per_example_norms(), expected_norms, rtol=1e-4, atol=1e-5
        )
        clipper.write_clipped_sum(clip)
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-5)


def test_per_example_norms_match_opacus_grad_samples():
    model = _mlp(6, 5, 3, 0)
    x, y = _batch(16, 6, 3, 1)
    gsm = GradSampleModule(_mlp(6, 5, 3, 0), loss_reduction="sum")
    F.cross_entropy(gsm(x), y, reduction="sum").backward()
    opacus_norms = torch.sqrt(sum(p.grad_sample.flatten(1).pow(2).sum(1) for p in gsm.parameters()))
    with ClippedGradients(model) as clipper:
        F.cross_entropy(model(x), y, reduction="sum").backward()
        torch.testing.assert_close(clipper.per_example_norms(), opacus_norms, rtol=1e-4, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(clip=st.floats(1e-3, 5.0), seed=st.integers(0, 1000))
def test_clipped_per_example_norms_never_exceed_the_bound(clip, seed):
    model = _mlp(8, 6, 4, seed)
    x, y = _batch(10, 8, 4, seed)
    with ClippedGradients(model) as clipper:
        F.cross_entropy(model(x), y, reduction="sum").backward()
        norms = clipper.per_example_norms()
        factors = clipper.write_clipped_sum(clip)
    assert torch.all(norms * factors <= clip * (1 + 1e-5))


def test_model_with_an_unsupported_layer_is_refused():
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match="Conv1d"):
        ClippedGradients(model)


def test_layers_get_their_own_forward_back_on_close():
    model = _mlp(3, 3, 2, 0)
    with ClippedGradients(model):
        assert "forward" in model[0].__dict__
    assert all("forward" not in m.__dict__ for m in model.modules())


def _convnet(seed):
    torch.manual_seed(seed)  # test-local: model weights only
    return nn.Sequential(
        nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.LayerNorm(8), nn.Linear(8, 3)
    )


@settings(max_examples=10, deadline=None)
@given(b=st.integers(1, 8), clip=st.floats(0.01, 10.0), seed=st.integers(0, 1000))
def test_opacus_fallback_clipped_sum_equals_brute_force(b, clip, seed):
    model = _convnet(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(b, 1, 6, generator=g) * 3, torch.randint(0, 3, (b,), generator=g)
    expected, expected_norms = _brute_force(model, x, y, clip)
    model.zero_grad(set_to_none=True)
    with clipped_gradients(model) as clipper:
        assert isinstance(clipper, OpacusClippedGradients)
        F.cross_entropy(model(x), y, reduction="sum").backward()
        torch.testing.assert_close(
            clipper.per_example_norms(), expected_norms, rtol=1e-4, atol=1e-5
        )
        clipper.write_clipped_sum(clip)
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-5)


def test_linear_models_take_the_one_pass_path():
    with clipped_gradients(_mlp(3, 3, 2, 0)) as clipper:
        assert isinstance(clipper, ClippedGradients)


class _LinearUsedTwice(nn.Module):
    """Tied weights: one nn.Linear applied twice in a forward pass."""

    def __init__(self, d, k):
        super().__init__()
        self.shared = nn.Linear(d, d)
        self.head = nn.Linear(d, k)

    def forward(self, x):
        return self.head(torch.tanh(self.shared(torch.tanh(self.shared(x)))))


class _ModuleListHoldingOneLayerTwice(nn.Module):
    """Tied weights: a module list holding the same nn.Linear twice, applied in turn."""

    def __init__(self, d, k):
        super().__init__()
        shared = nn.Linear(d, d)
        self.layers = nn.ModuleList([shared, shared, nn.Linear(d, k)])

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x)) + x
        return self.layers[-1](x)


class _TwoLinearsSharingAWeight(nn.Module):
    """Tied weights: two nn.Linear modules holding one weight Parameter (own biases)."""

    def __init__(self, d, k):
        super().__init__()
        self.first, self.second = nn.Linear(d, d), nn.Linear(d, d)
        self.second.weight = self.first.weight
        self.head = nn.Linear(d, k, bias=False)

    def forward(self, x):
        return self.head(torch.tanh(self.second(torch.tanh(self.first(x)))))


_TIED_MODELS = [_LinearUsedTwice, _ModuleListHoldingOneLayerTwice, _TwoLinearsSharingAWeight]


def _tied(model_cls, d, k, seed):
    torch.manual_seed(seed)  # test-local: model weights only
    return model_cls(d, k)


@pytest.mark.parametrize("model_cls", _TIED_MODELS)
@settings(max_examples=10, deadline=None)
@given(b=st.integers(1, 8), clip=st.floats(0.01, 10.0), seed=st.integers(0, 1000))
def test_tied_weights_per_example_norms_equal_brute_force(model_cls, b, clip, seed):
    model = _tied(model_cls, 4, 3, seed)
    x, y = _batch(b, 4, 3, seed)
    _, expected_norms = _brute_force(model, x, y, clip)
    model.zero_grad(set_to_none=True)
    with clipped_gradients(model) as clipper:
        F.cross_entropy(model(x), y, reduction="sum").backward()
        torch.testing.assert_close(
            clipper.per_example_norms(), expected_norms, rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("model_cls", _TIED_MODELS)
@settings(max_examples=10, deadline=None)
@given(b=st.integers(1, 8), clip=st.floats(0.01, 10.0), seed=st.integers(0, 1000))
def test_tied_weights_clipped_sum_equals_brute_force(model_cls, b, clip, seed):
    model = _tied(model_cls, 4, 3, seed)
    x, y = _batch(b, 4, 3, seed)
    expected, _ = _brute_force(model, x, y, clip)
    model.zero_grad(set_to_none=True)
    with clipped_gradients(model) as clipper:
        F.cross_entropy(model(x), y, reduction="sum").backward()
        clipper.write_clipped_sum(clip)
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-5)


class _HeadTiedToItsInput(nn.Module):
    """A weight used both by its layer and functionally (tied output projection)."""

    def __init__(self, d):
        super().__init__()
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        return torch.tanh(self.proj(x)) @ self.proj.weight.T


def test_weight_used_outside_its_layer_forward_is_refused():
    model = _HeadTiedToItsInput(4)
    x, y = _batch(5, 4, 4, 0)
    with ClippedGradients(model) as clipper:
        F.cross_entropy(model(x), y, reduction="sum").backward()
        with pytest.raises(UnsupportedLayerError, match=r"proj\.weight"):
            clipper.write_clipped_sum(1.0)


def test_two_forward_passes_before_one_write_are_refused():
    model = _mlp(3, 3, 2, 0)
    x, y = _batch(4, 3, 2, 0)
    with ClippedGradients(model) as clipper:
        F.cross_entropy(model(x), y, reduction="sum").backward()
        F.cross_entropy(model(x), y, reduction="sum").backward()
        with pytest.raises(RuntimeError, match="more than one forward pass"):
            clipper.write_clipped_sum(1.0)


def test_frozen_bias_is_neither_counted_nor_written():
    model = _mlp(3, 4, 2, 0)
    model[0].bias.requires_grad_(False)
    x, y = _batch(6, 3, 2, 0)
    expected, expected_norms = _brute_force(model, x, y, 0.5)
    model.zero_grad(set_to_none=True)
    with ClippedGradients(model) as clipper:
        F.cross_entropy(model(x), y, reduction="sum").backward()
        torch.testing.assert_close(
            clipper.per_example_norms(), expected_norms, rtol=1e-4, atol=1e-5
        )
        clipper.write_clipped_sum(0.5)
    assert model[0].bias.grad is None
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p, e in zip(trainable, expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-5)
