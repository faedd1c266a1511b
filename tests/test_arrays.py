"""Fast array conversions are byte-identical to Flower's and refuse malformed payloads."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcore.arrays import from_numpy, load_into, to_numpy, to_numpy_dict, to_record

dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8])


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)))
def test_payload_is_byte_identical_to_flower_and_round_trips(a):
    ours, flowers = from_numpy(a), Array(a)
    assert ours.data == flowers.data
    assert (ours.dtype, ours.shape, ours.stype) == (flowers.dtype, flowers.shape, flowers.stype)
    assert ours.object_id == flowers.object_id  # what Flower hashes and sends
    np.testing.assert_array_equal(to_numpy(flowers), a)
    np.testing.assert_array_equal(ours.numpy(), a)


def test_record_survives_flowers_wire_format():
    state = torch.nn.Linear(3, 2).state_dict()
    ours, flowers = to_record(state), ArrayRecord(state)
    assert ours.object_id == flowers.object_id
    assert ours.deflate() == flowers.deflate()


def test_fortran_ordered_payload_from_np_save_is_read_correctly():
    a = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    np.testing.assert_array_equal(to_numpy(Array(a)), a)


def test_state_dict_round_trip_keeps_names_and_values():
    state = torch.nn.Linear(3, 2).state_dict()
    back = to_numpy_dict(to_record(state))
    assert list(back) == list(state)
    assert all(np.array_equal(back[k], state[k].numpy()) for k in state)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda d: d[:-4],  # truncated data
        lambda d: b"XXXXXX" + d[6:],  # not .npy
        lambda d: d + b"\0\0\0\0",  # trailing bytes
    ],
)
def test_malformed_payload_is_refused(corrupt):
    good = from_numpy(np.zeros((2, 3), np.float32))
    bad = Array(dtype=good.dtype, shape=good.shape, stype=good.stype, data=corrupt(good.data))
    with pytest.raises(ValueError):
        to_numpy(bad)


def test_object_payload_is_refused():
    header = b"\x93NUMPY\x01\x00" + (46).to_bytes(2, "little")
    text = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    payload = header[:8] + len(text).to_bytes(2, "little") + text
    bad = Array(dtype="object", shape=(1,), stype="numpy.ndarray", data=payload + b"\0" * 8)
    with pytest.raises(ValueError, match="objects"):
        to_numpy(bad)


def test_load_into_writes_the_model_in_place():
    src, dst = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    weight_before = dst.weight
    load_into(dst, to_record(src.state_dict()))
    assert dst.weight is weight_before  # same Parameter, new values
    assert all(torch.equal(dst.state_dict()[k], src.state_dict()[k]) for k in src.state_dict())


def test_load_into_refuses_wrong_names_or_shapes_before_writing():
    model = torch.nn.Linear(4, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wrong_shape = to_record({"weight": torch.zeros(3, 5), "bias": torch.ones(3)})
    with pytest.raises(ValueError, match="shape"):
        load_into(model, wrong_shape)
    with pytest.raises(ValueError, match="missing"):
        load_into(model, to_record({"weight": torch.zeros(3, 4)}))
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)
