"""Dropout masks keyed by each sample's values (skcnn._dropout)."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from skcnn import CNNClassifier
from skcnn._dropout import dropout_masks, row_keys


def _rows(n=500, width=48, seed=0):
    return np.random.RandomState(seed).uniform(0, 1, (n, width)).astype(np.float32)


def test_equal_rows_get_equal_keys_and_different_rows_different_ones():
    X = _rows()
    X[7] = X[3]
    keys = row_keys(X)
    assert keys.dtype == np.uint64 and keys.shape == (500,)
    assert keys[7] == keys[3]
    assert len(np.unique(keys)) == 499
    # one pixel one grid step away is another sample
    Y = X.copy()
    Y[0, 5] += 1 / 32
    assert row_keys(Y)[0] != keys[0]
    assert_array_equal(row_keys(Y)[1:], keys[1:])


def test_keys_follow_the_scaled_values_not_their_representation():
    X = _rows()
    raw = np.rint(X * 255).astype(np.uint8)
    scaled = raw / np.float32(255)
    # uint8 pixels scaled by 255, and the same pixels pre-scaled to [0, 1]
    a = row_keys(raw, np.zeros(1), np.full(1, 255.0))
    b = row_keys(scaled.astype(np.float32), np.zeros(1), np.ones(1))
    c = row_keys(scaled.astype(np.float64), np.zeros(1), np.ones(1))
    assert_array_equal(a, b)
    assert_array_equal(b, c)


def test_huge_values_hash_without_warnings():
    # (input_scaling=None hashes the values as they are)
    X = _rows().astype(np.float64)
    X[0, 0], X[1, 0] = 1e300, -1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keys = row_keys(X)
    assert len(np.unique(keys)) == len(X)


def test_per_channel_scaling_is_applied_per_channel():
    X = _rows(width=12)  # 4 pixels x 3 channels
    offset, scale = np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 4.0])
    shifted = (X.reshape(len(X), 4, 3) * scale + offset).reshape(len(X), -1)
    assert_array_equal(row_keys(shifted, offset, scale), row_keys(X))


def test_masks_keep_the_requested_fraction_independently():
    keys = row_keys(_rows(4000))
    dtype = np.dtype(np.float32)
    masks = dropout_masks(keys, 11, [(2, 64), (4, 16)], 0.75, dtype)
    assert set(masks) == {2, 4}
    m = masks[2]
    assert m.shape == (4000, 64) and m.dtype == np.float32
    assert set(np.unique(m)) == {0.0, np.float32(1 / 0.75)}
    kept = m > 0
    assert abs(kept.mean() - 0.75) < 0.01  # 256k draws: sd 0.0009
    assert abs(kept.mean(axis=0) - 0.75).max() < 0.05  # every unit
    # units, layers and steps draw independently: agreement 0.75^2 + 0.25^2
    other_step = dropout_masks(keys, 12, [(2, 64)], 0.75, dtype)[2] > 0
    assert abs((kept == other_step).mean() - 0.625) < 0.01
    assert abs((kept[:, :16] == (masks[4] > 0)).mean() - 0.625) < 0.01
    assert abs(np.corrcoef(kept[:, 0], kept[:, 1])[0, 1]) < 0.05
    # and the same step gives the same masks
    assert_array_equal(dropout_masks(keys, 11, [(2, 64)], 0.75, dtype)[2], m)


def test_a_repeated_row_is_a_weight_of_two(images):
    # the property scikit-learn's sample-weight check needs: one minibatch
    # (the whole set), duplicated rows against integer weights
    X, y = images
    params = dict(conv_filters=(3,), hidden_layer_sizes=(6,), max_iter=3)
    # batch_size="auto" is at least 64: the whole set, one minibatch
    params.update(shuffle=False, random_state=0)
    weights = np.ones(len(X), dtype=int)
    weights[:10] = 2
    weighted = CNNClassifier(dropout=0.5, **params).fit(X, y, sample_weight=weights)
    repeated = CNNClassifier(dropout=0.5, **params).fit(
        np.concatenate([X, X[:10]]), np.concatenate([y, y[:10]])
    )
    for a, b in zip(weighted.coefs_, repeated.coefs_):
        assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # dropout does act: the fit differs from one without it
    plain = CNNClassifier(dropout=0.0, **params).fit(X, y, sample_weight=weights)
    assert not np.allclose(plain.coefs_[-1], weighted.coefs_[-1], atol=1e-4)


@pytest.mark.parametrize("dropout", [0.25, 0.5])
def test_dropout_fits_are_reproducible(images, dropout):
    X, y = images
    params = dict(conv_filters=(3,), hidden_layer_sizes=(6,), max_iter=2)
    a = CNNClassifier(dropout=dropout, random_state=3, **params).fit(X, y)
    b = CNNClassifier(dropout=dropout, random_state=3, **params).fit(X, y)
    c = CNNClassifier(dropout=dropout, random_state=4, **params).fit(X, y)
    assert_array_equal(a.coefs_[-1], b.coefs_[-1])
    assert not np.array_equal(a.coefs_[-1], c.coefs_[-1])
