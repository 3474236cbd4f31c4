"""Evaluator metrics against brute-force references."""
import itertools

import jax.numpy as jnp
import numpy as np

from asg_jax.evaluators import grounding, metrics


def brute_auroc(scores, labels):
  pos, neg = scores[labels], scores[~labels]
  wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
  return wins / (len(pos) * len(neg))


def test_auroc_matches_pairwise_count_with_ties():
  rng = np.random.default_rng(0)
  for _ in range(5):
    scores = rng.integers(0, 6, size=40).astype(float)   # many ties
    labels = rng.random(40) < 0.4
    np.testing.assert_allclose(metrics.auroc(scores, labels), brute_auroc(scores, labels))
  assert np.isnan(metrics.auroc(np.arange(3.0), np.zeros(3, bool)))
  assert metrics.auroc(np.array([0.1, 0.9]), np.array([False, True])) == 1.0


def test_retrieval_exact_and_chance():
  rng = np.random.default_rng(1)
  n = 9
  groups = np.array([0, 1, 2, 2, 3, 4, 5, 6, 7])   # pairs 2 and 3 share a caption
  sim = rng.normal(size=(n, n))
  m, c = metrics.retrieval_at_k(sim, groups, ks=(1, 5))
  # brute force
  same = groups[:, None] == groups[None, :]
  i2t1 = np.mean([same[i, np.argmax(sim[i])] for i in range(n)])
  t2i5 = np.mean([same[j, np.argsort(-sim[:, j])[:5]].any() for j in range(n)])
  np.testing.assert_allclose(m["i2t_top1"], i2t1)
  np.testing.assert_allclose(m["t2i_top5"], t2i5)
  # chance by enumerating all 5-subsets for a query with 2 correct items among 9
  subsets = list(itertools.combinations(range(n), 5))
  p2 = np.mean([(0 in s) or (1 in s) for s in subsets])
  p1 = np.mean([0 in s for s in subsets])
  want = (7 * p1 + 2 * p2) / 9
  np.testing.assert_allclose(c["top5"], want)
  np.testing.assert_allclose(c["top1"], (7 * 1 / 9 + 2 * 2 / 9) / 9)


def test_pointing_game_vs_numpy():
  rng = np.random.default_rng(2)
  b, r, g, d, size = 3, 4, 4, 8, 64
  patch = rng.normal(size=(b, g * g, d)).astype(np.float32)
  sent = rng.normal(size=(b, r, d)).astype(np.float32)
  boxes = np.sort(rng.uniform(0, size, size=(b, r, 2, 2)), axis=2).transpose(0, 1, 3, 2)
  boxes = boxes.reshape(b, r, 4)[..., [0, 2, 1, 3]].astype(np.float32)  # x1,y1,x2,y2
  mask = rng.random((b, r)) < 0.7
  out = grounding.pointing_game(jnp.asarray(patch), jnp.asarray(sent), jnp.asarray(boxes),
                                jnp.asarray(mask), (g, g), size)
  cell = size / g
  for i in range(b):
    for j in range(r):
      best = np.argmax(patch[i] @ sent[i, j])
      cy, cx = (best // g + 0.5) * cell, (best % g + 0.5) * cell
      x1, y1, x2, y2 = boxes[i, j]
      hit = float(x1 <= cx <= x2 and y1 <= cy <= y2) * mask[i, j]
      assert out["hit"][i, j] == hit
      centers = [((k % g + 0.5) * cell, (k // g + 0.5) * cell) for k in range(g * g)]
      frac = np.mean([x1 <= x <= x2 and y1 <= y <= y2 for x, y in centers]) * mask[i, j]
      np.testing.assert_allclose(out["chance"][i, j], frac, rtol=1e-6)
