import numpy as np

from fedcore.datasets import load_dataset
from fedcore.datasets.iris import SCALE


def test_iris_is_split_stratified_scaled_into_the_unit_box_and_the_same_every_call():
    from sklearn.datasets import load_iris

    ds, again = load_dataset("iris"), load_dataset("iris")
    assert (len(ds.y_train), len(ds.y_test), ds.num_features, ds.num_classes) == (120, 30, 4, 3)
    assert np.bincount(ds.y_test).tolist() == [10, 10, 10]
    assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    # one constant scale: the source's distances, up to that factor
    pooled = np.concatenate([ds.x_train, ds.x_test]).astype(np.float64) * SCALE
    source = load_iris().data
    np.testing.assert_allclose(np.sort(pooled, axis=0), np.sort(source, axis=0), atol=1e-5)
