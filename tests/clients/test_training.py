"""Local training: it learns, it is reproducible from its generator, FedProx pulls it back."""

import torch

from clients.training import evaluate, train_one_client
from fedcore.tasks import ClientData, TrainParams
from fedcore.tasks.mlp import mlp


def _data(seed=0, n=200, d=8, k=3):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * 3
    y = torch.randint(0, k, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g)
    return ClientData(x[:150], y[:150], x[150:], y[150:])


def _model(seed=0):
    return mlp(8, (16,), 3, torch.Generator().manual_seed(seed))


PARAMS = TrainParams(epochs=3, batch_size=16, lr=0.1)


def test_local_training_lowers_the_loss():
    data, model = _data(), _model()
    before = evaluate(model, data.x_test, data.y_test)
    train_one_client(model, data, PARAMS, torch.Generator().manual_seed(1))
    after = evaluate(model, data.x_test, data.y_test)
    assert after["loss"] < before["loss"] and after["accuracy"] > 0.9


def test_same_generator_gives_the_same_update():
    data = _data()
    a = train_one_client(_model(), data, PARAMS, torch.Generator().manual_seed(5))
    b = train_one_client(_model(), data, PARAMS, torch.Generator().manual_seed(5))
    c = train_one_client(_model(), data, PARAMS, torch.Generator().manual_seed(6))
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert not all(torch.equal(a.state[k], c.state[k]) for k in a.state)
    assert a.num_examples == 150


def test_model_init_uses_only_its_generator():
    torch.manual_seed(123)
    a = _model(7).state_dict()
    torch.manual_seed(456)
    b = _model(7).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _distance(model, start):
    return sum((p - s).pow(2).sum() for p, s in zip(model.parameters(), start, strict=True))


def test_proximal_term_keeps_weights_closer_to_the_global_model():
    data = _data()
    distances = []
    for mu in (0.0, 1.0):
        model = _model()
        start = [p.detach().clone() for p in model.parameters()]
        params = TrainParams(epochs=3, batch_size=16, lr=0.1, proximal_mu=mu)
        train_one_client(model, data, params, torch.Generator().manual_seed(1))
        distances.append(_distance(model, start).item())
    assert distances[1] < distances[0]


def test_mlp_activation_is_configurable():
    model = mlp(4, (3, 3), 2, torch.Generator().manual_seed(0), activation="tanh")
    assert [type(m).__name__ for m in model] == ["Linear", "Tanh", "Linear", "Tanh", "Linear"]
