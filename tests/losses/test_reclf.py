"""RECLF / GLoRIA objectives against NumPy references (reclf.md; docs/reclf.md)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax.losses import contrastive, reclf
from asg_jax.models import local_matching
from asg_jax.models.relation import LocalMatchingHead


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_inputs(bi=3, bj=4, m=6, n=5, e=8, seed=0):
  rng = np.random.default_rng(seed)
  patch = _unit(rng.normal(size=(bi, m, e))).astype(np.float32)
  words = _unit(rng.normal(size=(bj, n, e))).astype(np.float32)
  lengths = rng.integers(1, n + 1, size=bj)
  lengths[0] = n
  mask = np.arange(n)[None] < lengths[:, None]
  words = np.where(mask[..., None], words, 0).astype(np.float32)
  importance = rng.uniform(0.1, 1.0, size=(bj, n)).astype(np.float32)
  return patch, words, mask, importance


# ----------------------------------------------------------------- NumPy references (loops)


def _softmax(x):
  x = x - x.max()
  return np.exp(x) / np.exp(x).sum()


def np_scores(patch, words, mask, tau, word_softmax_first=False):
  """r [Bi, Bj, N] and h [Bi, Bj, N, E] with explicit loops over pairs and words."""
  bi, bj, n = patch.shape[0], words.shape[0], words.shape[1]
  r = np.zeros((bi, bj, n))
  h = np.zeros((bi, bj, n, words.shape[2]))
  for i in range(bi):
    for j in range(bj):
      valid = np.flatnonzero(mask[j])
      dots = words[j][valid] @ patch[i].T                       # [n_valid, M]
      if word_softmax_first:
        dots = np.stack([_softmax(col) for col in dots.T], axis=1)
      for idx, k in enumerate(valid):
        a = _softmax(dots[idx] / tau)
        c = a @ patch[i]
        h[i, j, k] = words[j, k] * c / np.linalg.norm(c)
        r[i, j, k] = h[i, j, k].sum()
  return r, h


def np_lse(r, mask, gamma2):
  out = np.zeros(r.shape[:2])
  for i in range(r.shape[0]):
    for j in range(r.shape[1]):
      v = r[i, j][mask[j]]
      out[i, j] = np.log(np.sum(np.exp(gamma2 * v))) / gamma2
  return out


def np_soft_ce(x, q):
  def logsm(v):
    return v - np.log(np.sum(np.exp(v - v.max()))) - v.max()
  b = x.shape[0]
  i2t = -sum(q[i] @ logsm(x[i]) for i in range(b)) / b
  t2i = -sum(q[j] @ logsm(x[:, j]) for j in range(b)) / b
  return 0.5 * (i2t + t2i)


# ------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("word_softmax_first", [False, True])
def test_local_matching_scores_match_numpy(word_softmax_first):
  patch, words, mask, _ = make_inputs()
  r, h = local_matching.local_matching_scores(patch, words, mask, 0.1, return_features=True,
                                     word_softmax_first=word_softmax_first)
  r_ref, h_ref = np_scores(patch, words, mask, 0.1, word_softmax_first)
  assert r.shape == (3, 4, 5) and h.shape == (3, 4, 5, 8)
  np.testing.assert_allclose(r, r_ref, atol=1e-5)
  np.testing.assert_allclose(h, h_ref, atol=1e-5)
  # normalised words: the score is a cosine
  assert np.all(np.abs(np.asarray(r)) <= 1 + 1e-5)


def test_gloria_similarity_and_loss_match_numpy():
  patch, words, mask, _ = make_inputs(bi=4, bj=4)
  r_ref, _ = np_scores(patch, words, mask, 1 / 4.0)
  sim_ref = np_lse(r_ref, mask, 5.0)
  sim = local_matching.gloria_local_similarity(patch, words, mask, gamma1=4.0, gamma2=5.0)
  np.testing.assert_allclose(sim, sim_ref, atol=1e-5)
  loss = reclf.gloria_local_loss(patch, words, mask, gamma1=4.0, gamma2=5.0, gamma3=10.0)
  np.testing.assert_allclose(loss, np_soft_ce(10 * sim_ref, np.eye(4)), atol=1e-4)
  head = LocalMatchingHead(mode="gloria", block_size=3)
  params = head.init(jax.random.key(0), patch, words, mask)
  assert not jax.tree.leaves(params)
  np.testing.assert_allclose(head.apply(params, patch, words, mask), sim_ref, atol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(), dict(srm_layers=2, srm_heads=2),
                                    dict(srm_visual_context=True)])
def test_reclf_head_at_init_is_importance_weighted_cosine(kwargs):
  """Identity SRM (W_v = 0) and ω = π (g's output layer = 0) at initialisation."""
  patch, words, mask, importance = make_inputs()
  head = LocalMatchingHead(mode="reclf", attn_temperature=0.1, block_size=3, **kwargs)
  params = jax.jit(head.init)(jax.random.key(1), patch, words, mask, importance)
  sim = jax.jit(head.apply)(params, patch, words, mask, importance)
  r_ref, _ = np_scores(patch, words, mask, 0.1)
  pi = np.where(mask, importance, 0)
  pi = pi / pi.sum(-1, keepdims=True)
  np.testing.assert_allclose(sim, np.einsum("ijk,jk->ij", r_ref, pi), atol=1e-5)
  omega = local_matching.importance_weights(importance, mask, jnp.zeros(mask.shape))
  np.testing.assert_allclose(omega, pi, atol=1e-6)


def test_reclf_without_irm_uses_pooling():
  patch, words, mask, _ = make_inputs()
  r_ref, _ = np_scores(patch, words, mask, 0.1)
  for pooling, ref in [("lse", np_lse(r_ref, mask, 5.0)),
                       ("mean", (r_ref * mask).sum(-1) / mask.sum(-1))]:
    head = LocalMatchingHead(mode="reclf", use_irm=False, use_srm=False, pooling=pooling)
    params = head.init(jax.random.key(0), patch, words, mask)
    np.testing.assert_allclose(head.apply(params, patch, words, mask), ref, atol=1e-5)


def test_srm_message_matches_numpy():
  """One SRM layer with random (non-zero) weights against an explicit loop."""
  patch, words, mask, _ = make_inputs()
  rng = np.random.default_rng(3)
  e, heads = 8, 2
  layer = {k: rng.normal(size=(e, e)).astype(np.float32) * 0.5
           for k in ("query", "key", "value")}
  _, h = np_scores(patch, words, mask, 0.1)
  out = np.zeros_like(h)
  dh = e // heads
  for i in range(h.shape[0]):
    for j in range(h.shape[1]):
      valid = mask[j]
      q, k = words[j] @ layer["query"], words[j] @ layer["key"]
      msg = np.zeros((h.shape[2], e))
      for hd in range(heads):
        sl = slice(hd * dh, (hd + 1) * dh)
        for kk in np.flatnonzero(valid):
          logits = np.where(valid, k[:, sl] @ q[kk, sl] / np.sqrt(dh), -np.inf)
          g = np.exp(logits - logits.max())
          g = g / g.sum()
          msg[kk, sl] = g @ h[i, j][:, sl]
      out[i, j] = np.where(valid[:, None], h[i, j] + msg @ layer["value"], 0)
  got = local_matching.srm_refine(jnp.asarray(h, jnp.float32), words, mask, [layer], num_heads=heads)
  np.testing.assert_allclose(got, out, atol=1e-4)


def _nonzero_params(params, seed=7):
  """Randomise every parameter (incl. the zero-initialised W_v and g output layer)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, x.shape)
                                   for k, x in zip(keys, leaves)])


@pytest.mark.parametrize("kwargs", [dict(srm_layers=2, srm_heads=2),
                                    dict(srm_visual_context=True, word_softmax_first=True),
                                    dict(mode="gloria")])
def test_padding_words_never_change_the_score(kwargs):
  patch, words, mask, importance = make_inputs(bj=5, seed=4)
  head = LocalMatchingHead(block_size=2, **kwargs)
  params = _nonzero_params(head.init(jax.random.key(0), patch, words, mask, importance))
  apply = jax.jit(head.apply)
  base = apply(params, patch, words, mask, importance)
  rng = np.random.default_rng(5)
  noisy_words = np.where(mask[..., None], words, rng.normal(size=words.shape) * 10)
  noisy_imp = np.where(mask, importance, rng.uniform(0, 100, size=importance.shape))
  got = apply(params, patch, noisy_words.astype(np.float32), mask,
              noisy_imp.astype(np.float32))
  np.testing.assert_array_equal(np.asarray(got), np.asarray(base))
  nan_words = np.where(mask[..., None], words, np.nan).astype(np.float32)
  got = apply(params, patch, nan_words, mask, importance)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(base))


_BLOCK_KW = dict(srm_layers=2, srm_heads=2)


def _blocked_value_and_grad(block_size, remat=True):
  patch, words, mask, importance = make_inputs(bi=3, bj=5, seed=6)
  head = LocalMatchingHead(block_size=block_size, remat=remat, **_BLOCK_KW)
  params = _nonzero_params(head.init(jax.random.key(0), patch, words, mask, importance))

  def fn(p, x, w):
    return jnp.sum(jnp.sin(3 * head.apply(p, x, w, mask, importance)))
  return jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2)))(params, patch, words)


@functools.lru_cache(maxsize=1)
def _unblocked_reference():
  return _blocked_value_and_grad(None, remat=False)


@pytest.mark.parametrize("block_size", [2, None])
def test_blocked_equals_unblocked_values_and_gradients(block_size):
  v_ref, g_ref = _unblocked_reference()
  v, g = _blocked_value_and_grad(block_size)
  np.testing.assert_allclose(v, v_ref, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_beta_zero_is_symmetric_infonce():
  rng = np.random.default_rng(0)
  v = _unit(rng.normal(size=(6, 8))).astype(np.float32)
  t = _unit(rng.normal(size=(6, 8))).astype(np.float32)
  logits = v @ t.T / 0.07
  sim = np.clip(rng.uniform(size=(6, 6)), 0, 1)
  sim = (sim + sim.T) / 2
  for s in (None, sim):
    loss = reclf.semantic_contrastive_loss(logits, s, beta=0.0)
    np.testing.assert_allclose(loss, reclf.symmetric_cross_entropy(logits), rtol=1e-6)
    # ASG's IRA is the SUM of the two directions: twice this.
    np.testing.assert_allclose(2 * loss, contrastive.ira_loss(v, t, 0.07), rtol=1e-5)
  # all-equal logits: log B
  np.testing.assert_allclose(reclf.semantic_contrastive_loss(np.zeros((6, 6)), sim, 0.2),
                             np.log(6), rtol=1e-6)


def test_semantic_loss_matches_numpy():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(5, 5)).astype(np.float32) * 3
  s = rng.uniform(-0.3, 1, size=(5, 5))
  s = (s + s.T) / 2
  q = 0.8 * np.eye(5) + 0.2 * np.clip(s, 0, None)
  q = q / q.sum(1, keepdims=True)
  np.testing.assert_allclose(reclf.semantic_contrastive_loss(x, s, beta=0.2),
                             np_soft_ce(x, q), rtol=1e-5)
  np.testing.assert_allclose(reclf.semantic_soft_targets(s, 0.2), q, rtol=1e-6)


def test_label_similarity_sources():
  nan = np.nan
  chexpert = np.array([[1, 0, -1, nan], [1, nan, nan, nan], [0, 0, 0, nan],
                       [nan, nan, -1, nan]], np.float32)
  s = reclf.semantic_similarity({"chexpert": chexpert}, None, "chexpert")
  y = np.array([[1, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]], np.float64)
  norms = np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
  np.testing.assert_allclose(s, (y / norms) @ (y / norms).T, atol=1e-6)
  assert np.all(np.isfinite(s)) and s[2].sum() == 0       # no finding: zero row
  s0 = reclf.semantic_similarity({"chexpert": chexpert}, None, "chexpert",
                                 chexpert_uncertain=0.0)
  assert s0[0, 3] == 0 and s0[3, 3] == 0

  tags = np.array([[1, -1, 0, 1], [1, 1, -1, -1], [-1, -1, -1, -1]], np.int32)
  s = reclf.semantic_similarity({"tags": tags}, None, "tags")
  np.testing.assert_allclose(s, [[1, .5, 0], [.5, 1, 0], [0, 0, 0]], atol=1e-6)
  q = reclf.semantic_soft_targets(s, 0.2)
  np.testing.assert_allclose(q[2], [0, 0, 1], atol=1e-6)  # unlabeled: one-hot

  emb = np.array([[1, 0], [0.6, 0.8], [-1, 0]], np.float32)
  s = reclf.semantic_similarity(None, emb, "embedding")
  np.testing.assert_allclose(s, [[1, .6, 0], [.6, 1, 0], [0, 0, 1]], atol=1e-6)
  g = jax.grad(lambda e: jnp.sum(reclf.semantic_similarity(None, e, "embedding")))(emb)
  assert np.all(g == 0)                                    # detached
  np.testing.assert_allclose(reclf.semantic_similarity({"chexpert": chexpert}, emb, "auto"),
                             reclf.semantic_similarity({"chexpert": chexpert}, emb,
                                                       "chexpert"))


@pytest.mark.parametrize("gloria", [False, True])
def test_reclf_objective(gloria):
  rng = np.random.default_rng(2)
  b = 6
  v = _unit(rng.normal(size=(b, 8))).astype(np.float32)
  t = _unit(rng.normal(size=(b, 8))).astype(np.float32)
  r = rng.uniform(-1, 1, size=(b, b)).astype(np.float32)
  batch = {"tags": rng.integers(-1, 2, size=(b, 40)).astype(np.int32)}
  outputs = {"image_emb": v, "text_emb": t, "local_logits": r}
  beta = 0.0 if gloria else 0.2
  loss, meas = reclf.reclf_objective(outputs, batch, beta=beta, gloria=gloria,
                                     lambda_local=0.5)
  cos = v @ t.T
  if gloria:
    g_ref, l_ref = np_soft_ce(10 * cos, np.eye(b)), np_soft_ce(10 * r, np.eye(b))
  else:
    q = np.asarray(reclf.semantic_soft_targets(reclf.semantic_similarity(batch, None, "tags"), 0.2))
    g_ref, l_ref = np_soft_ce(cos / 0.07, q), np_soft_ce(r / 0.1, q)
  np.testing.assert_allclose(meas["global_loss"], g_ref, rtol=1e-5)
  np.testing.assert_allclose(meas["local_loss"], l_ref, rtol=1e-5)
  np.testing.assert_allclose(loss, g_ref + 0.5 * l_ref, rtol=1e-5)
  assert set(meas) >= {"loss", "global_loss", "local_loss", "global_top1", "local_top1"}
  grads = jax.grad(lambda o: reclf.reclf_objective(o, batch, beta=beta, gloria=gloria)[0])(
      outputs)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  np.testing.assert_allclose(reclf.retrieval_top1(np.eye(3)), 1.0)


def _temp_bytes(block_size, bi=8, bj=32):
  """Compiled temp memory of the RECLF local loss + gradients (realistic N, M, E)."""
  n, m, e = 111, 196, 128
  head = LocalMatchingHead(block_size=block_size)
  shapes = [jax.ShapeDtypeStruct(s, d) for s, d in
            [((bi, m, e), jnp.float32), ((bj, n, e), jnp.float32), ((bj, n), jnp.bool_),
             ((bj, n), jnp.float32)]]
  params = jax.eval_shape(lambda: head.init(jax.random.key(0), *[
      jnp.zeros(s.shape, s.dtype) for s in shapes]))

  def loss(p, x, w, mask, imp):
    return jnp.sum(head.apply(p, x, w, mask, imp) ** 2)

  fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
  return fn.lower(params, *shapes).compile().memory_analysis().temp_size_in_bytes


def test_blocked_local_loss_memory_is_bounded():
  """Reduced size (8 images x 32 reports, real N, M, E): blocking by 4 reports keeps the
  compiled temp memory under 64 MiB and well below the unblocked computation."""
  blocked, unblocked = _temp_bytes(4), _temp_bytes(None)
  attention_bytes = 8 * 32 * 111 * 196 * 4
  assert unblocked > attention_bytes
  assert blocked < 64 * 2**20
  assert blocked < unblocked / 3


def test_attended_context_custom_vjp_matches_autodiff():
  patch, words, mask, _ = make_inputs(bi=3, bj=4, seed=8)
  words = jnp.asarray(words)

  def plain(w, p):
    a = jax.nn.softmax(jnp.einsum("jke,ime->ijkm", w, p) / 0.1, axis=-1)
    return jnp.einsum("ijkm,ime->ijke", a, p)

  cot = jax.random.normal(jax.random.key(0), (3, 4, 5, 8))
  f = lambda fn: jax.value_and_grad(lambda w, p: jnp.sum(cot * fn(w, p)), argnums=(0, 1))
  (v, g), (v_ref, g_ref) = (
      jax.jit(f(lambda w, p: local_matching.attended_context(w, p, 0.1)))(words, patch),
      jax.jit(f(plain))(words, patch))
  np.testing.assert_allclose(v, v_ref, rtol=1e-5, atol=1e-5)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bfloat16_local_matching_multiplies_in_bf16_and_stays_close_to_float32():
  """compute_dtype=bfloat16: the word–patch products take bf16 operands (float32
  accumulation), the attention kept for the backward pass is bf16, and values and
  gradients stay within bf16 rounding of the float32 path (which is unchanged)."""
  patch, words, mask, importance = make_inputs(bi=4, bj=4, m=12, n=6, e=16, seed=3)
  words = jnp.asarray(words)
  cot = jax.random.normal(jax.random.key(1), (4, 4, 6, 16))

  def grads(dtype):
    fn = lambda w, p: jnp.sum(cot * local_matching.attended_context(w, p, 0.1, dtype))  # noqa: E731
    return jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))

  (v32, g32), (v16, g16) = grads(None)(words, patch), grads(jnp.bfloat16)(words, patch)
  ctx16 = jax.jit(lambda w, p: local_matching.attended_context(w, p, 0.1, jnp.bfloat16))(words, patch)
  assert ctx16.dtype == jnp.float32
  scale = float(np.abs(v32))
  assert abs(float(v16) - float(v32)) <= 2e-2 * scale
  assert float(v16) != float(v32)                          # it did run in bf16
  for a, b in zip(g16, g32):
    assert a.dtype == jnp.float32
    err = float(jnp.max(jnp.abs(a - b))) / float(jnp.max(jnp.abs(b)))
    assert 0 < err < 3e-2
  hlo = grads(jnp.bfloat16).lower(words, patch).as_text()
  assert "bf16" in hlo and "dot_general" in hlo

  # the whole RECLF similarity (SRM off, IRM weights): float32 result, close to float32
  weights = local_matching.importance_weights(jnp.asarray(importance), jnp.asarray(mask))
  sim = lambda dtype: jax.jit(lambda p, w: local_matching.reclf_local_similarity(  # noqa: E731
      p, w, jnp.asarray(mask), weights, block_size=2, compute_dtype=dtype))(patch, words)
  s32, s16 = sim(None), sim(jnp.bfloat16)
  np.testing.assert_array_equal(s32, sim(jnp.float32))    # float32 = the unchanged path
  assert s16.dtype == jnp.float32
  np.testing.assert_allclose(s16, s32, atol=2e-2)
  assert not np.allclose(s16, s32, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_model_dtype_reaches_the_local_matching_head(dtype):
  """`config.model.dtype` of a RECLF model is its local head's matmul dtype (through
  VisionLanguageModel.setup, bound without parameters)."""
  from asg_jax import config as config_lib
  from asg_jax.models import vlp
  import pathlib
  demo = pathlib.Path(__file__).resolve().parents[2] / "configs" / "demo.py"
  c = config_lib.load_recipe(f"{demo}:objective=reclf")
  c.model.dtype = dtype
  model = vlp.VisionLanguageModel(vlp.frozen_model_config(c)).bind({})
  assert jnp.dtype(model.local_head.dtype) == jnp.dtype(dtype)
