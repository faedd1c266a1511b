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
    """Clip each example's gradient, computed one example at a time, and sum."""
    total = [torch.zeros_like(p) for p in model.parameters()]
    norms = []
    for i in range(len(y)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1], reduction="sum").backward()
        grads = [p.grad.clone() for p in model.parameters()]
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
