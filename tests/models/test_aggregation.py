"""Word-piece -> word aggregation and word importance vs NumPy loop references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax.models.aggregation import aggregate_importance, aggregate_words


def _word_ids(rng, b, l):
  """Pipeline-like word ids: [CLS]=-1, words of 1-3 pieces, [SEP] the next slot, then -1
  padding; the last row is all padding (-1 everywhere)."""
  out = np.full((b, l), -1, np.int32)
  for i in range(b - 1):
    n_tok = rng.integers(2, l + 1)      # [CLS] + pieces + [SEP]
    pos, word = 1, 0
    while pos < n_tok - 1:
      pieces = min(int(rng.integers(1, 4)), n_tok - 1 - pos)
      out[i, pos:pos + pieces] = word
      pos += pieces
      word += 1
    out[i, n_tok - 1] = word             # [SEP]
  return out


def _np_words(hidden, word_ids):
  b, l, d = hidden.shape
  words = np.zeros((b, l - 1, d), np.float64)
  mask = np.zeros((b, l - 1), bool)
  for i in range(b):
    for t in range(l):
      w = word_ids[i, t]
      if w >= 0:
        words[i, w] += hidden[i, t]
        mask[i, w] = True
  return words, mask


def _np_importance(attention, word_ids, mask):
  b, _, l, _ = attention.shape
  out = np.zeros((b, l - 1), np.float64)
  for i in range(b):
    row = attention[i, :, 0, :].mean(0)
    for t in range(l):
      if word_ids[i, t] >= 0 and mask[i, word_ids[i, t]]:
        out[i, word_ids[i, t]] += row[t]
    if out[i].sum() > 0:
      out[i] /= out[i].sum()
  return out


def test_aggregate_words_matches_numpy_loop():
  rng = np.random.default_rng(0)
  b, l, d = 5, 12, 4
  word_ids = _word_ids(rng, b, l)
  hidden = rng.normal(size=(b, l, d)).astype(np.float32)
  got, mask = jax.jit(aggregate_words)(jnp.asarray(hidden), jnp.asarray(word_ids))
  ref, ref_mask = _np_words(hidden, word_ids)
  assert got.shape == (b, l - 1, d) and mask.shape == (b, l - 1) and mask.dtype == jnp.bool_
  np.testing.assert_allclose(got, ref, atol=1e-5)
  np.testing.assert_array_equal(mask, ref_mask)
  assert not mask[-1].any() and np.all(np.asarray(got[-1]) == 0)   # all-padding row
  # the [CLS] and padding tokens never contribute
  hidden2 = hidden.copy()
  hidden2[word_ids < 0] = 1e6
  got2, _ = aggregate_words(jnp.asarray(hidden2), jnp.asarray(word_ids))
  np.testing.assert_allclose(got2, got, atol=1e-5)


def test_aggregate_words_hand_example():
  # [CLS] pleu ##ral eff ##usion [SEP] [PAD]  ->  slots: pleural, effusion, [SEP]
  word_ids = jnp.asarray([[-1, 0, 0, 1, 1, 2, -1]])
  hidden = jnp.arange(7, dtype=jnp.float32)[None, :, None] + 1.0
  words, mask = aggregate_words(hidden, word_ids)
  np.testing.assert_array_equal(words[0, :, 0], [2 + 3, 4 + 5, 6, 0, 0, 0])
  np.testing.assert_array_equal(mask[0], [True, True, True, False, False, False])
  with pytest.raises(ValueError, match="word_ids"):
    aggregate_words(hidden, word_ids[:, :5])


def test_aggregate_importance_matches_numpy_loop():
  rng = np.random.default_rng(1)
  b, h, l = 5, 3, 10
  word_ids = _word_ids(rng, b, l)
  logits = rng.normal(size=(b, h, l, l))
  attention = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  _, mask = _np_words(np.zeros((b, l, 1)), word_ids)
  got = jax.jit(aggregate_importance)(jnp.asarray(attention, jnp.float32),
                                      jnp.asarray(word_ids), jnp.asarray(mask))
  ref = _np_importance(attention, word_ids, mask)
  np.testing.assert_allclose(got, ref, atol=1e-6)
  sums = np.asarray(got).sum(-1)
  np.testing.assert_allclose(sums[:-1], 1.0, rtol=1e-5)
  assert sums[-1] == 0 and np.all(np.isfinite(got))                  # empty row: zeros
  assert np.all(np.asarray(got)[~mask] == 0)


def test_aggregate_importance_gradient_is_finite_on_empty_rows():
  word_ids = jnp.full((2, 6), -1).at[0, 1:4].set(jnp.asarray([0, 0, 1]))
  mask = jnp.zeros((2, 5), bool).at[0, :2].set(True)
  attention = jnp.full((2, 2, 6, 6), 1 / 6)
  g = jax.jit(jax.grad(lambda a: jnp.sum(aggregate_importance(a, word_ids, mask) ** 2)))(
      attention)
  assert np.all(np.isfinite(g))
