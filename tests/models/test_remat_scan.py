"""Rematerialisation and `nn.scan` of the ViT blocks / BERT layers (asg_jax/models/remat.py).

For each tower and each remat in {none, block, dots_saveable} x scan in {False, True}: the
outputs (cls, tokens, last-block attention) and the gradients of a scalar loss of all of
them w.r.t. the parameters equal the plain tower's (same parameters, restacked for scan) to
1e-5 in float32, in train mode (dropout rates 0) and in eval mode. Also: the scanned
parameter tree is `stack_layers` of the unscanned one and round-trips exactly; the Hugging
Face loaders fill scanned trees (the real 6-layer all-MiniLM-L6-v2 BERT, a tiny random ViT);
`build` reads the config keys (and defaults them for older configs).
"""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from asg_jax.models import bert, remat, vit
from tests.helpers import minilm_dir

KEY = jax.random.key(0, impl="rbg")
TOL = dict(atol=1e-5, rtol=1e-5)
SETTINGS = [(r, s) for r in remat.REMAT_OPTIONS for s in (False, True)]

VIT = dict(patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, dropout=0.0)
BERT = dict(vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
            intermediate_size=48, max_position_embeddings=20, hidden_dropout=0.0,
            attention_dropout=0.0)
L = 16
# XLA:CPU compiles ~2x faster without LLVM optimisation (compiling is most of this file's
# run time); the arithmetic is float32 either way
FAST = dict(compiler_options={"xla_backend_optimization_level": 0})


def _images():
  return np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)


def _text():
  rng = np.random.default_rng(1)
  ids = rng.integers(1, BERT["vocab_size"], size=(2, L)).astype(np.int32)
  mask = np.ones((2, L), np.int32)
  mask[0, 11:] = 0     # padding in the first row
  ids[0, 11:] = 0
  return ids, mask


def _random_params(model, *args):
  """The shapes of `model.init` filled with NumPy-random values (no initialiser compiles)."""
  rng = np.random.default_rng(2)
  shapes = jax.eval_shape(lambda: model.init(KEY, *args, train=False))["params"]
  fill = lambda p, s: ((1.0 if p[-1].key == "scale" else 0.0)
                       + 0.2 * rng.normal(size=s.shape)).astype(s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _loss_weights(out):
  rng = np.random.default_rng(3)
  return {k: rng.normal(size=v.shape).astype(np.float32) for k, v in out.items()}


def _outputs_and_grads(model, params, args, weights):
  """{mode: (outputs, d loss / d params)} for train (dropout rates 0) and eval."""
  def one(p, train):
    def loss(p):
      out = model.apply({"params": p}, *args, train=train)
      return sum(jnp.sum(out[k] * weights[k]) for k in weights), out
    grads, out = jax.grad(loss, has_aux=True)(p)
    return out, grads
  return {"train": one(params, True), "eval": one(params, False)}


def _check_tower(make, args):
  plain = make("none", False)
  params = _random_params(plain, *args)
  weights = _loss_weights(jax.eval_shape(lambda: plain.apply({"params": params}, *args,
                                                              train=False)))
  assert set(weights) >= {"cls", "attention"}

  @functools.partial(jax.jit, **FAST)
  def everything(params, stacked):   # one compile for all settings (compiling dominates)
    return {(name, scan): _outputs_and_grads(make(name, scan), stacked if scan else params,
                                             args, weights) for name, scan in SETTINGS}

  results = everything(params, remat.stack_layers(params))
  ref = results["none", False]
  for (name, scan), got in results.items():
    for mode in ("train", "eval"):
      what = f"remat={name} scan={scan} {mode}"
      (out, grads), (ref_o, ref_g) = got[mode], ref[mode]
      assert set(out) == set(ref_o), what
      for k in ref_o:
        np.testing.assert_allclose(out[k], ref_o[k], **TOL, err_msg=f"{what}: {k}")
      grads = remat.unstack_layers(grads) if scan else grads
      flat, ref_flat = (jax.tree_util.tree_leaves_with_path(g) for g in (grads, ref_g))
      assert [q for q, _ in flat] == [q for q, _ in ref_flat], what
      for (path, g), (_, r) in zip(flat, ref_flat):
        np.testing.assert_allclose(g, r, **TOL,
                                   err_msg=f"{what}: grad {jax.tree_util.keystr(path)}")


@pytest.mark.slow
def test_vit_remat_scan_parity():
  _check_tower(lambda r, s: vit.ViT(**VIT, remat=r, scan=s), (_images(),))


@pytest.mark.slow
def test_bert_remat_scan_parity():
  _check_tower(lambda r, s: bert.BertEncoder(**BERT, remat=r, scan=s), _text())


def test_scanned_layout_and_round_trip():
  images = _images()
  plain, scanned = vit.ViT(**VIT), vit.ViT(**VIT, scan=True, remat="block")
  shapes = jax.eval_shape(lambda: plain.init(KEY, images, train=False))["params"]
  scanned_shapes = jax.eval_shape(lambda: scanned.init(KEY, images, train=False))["params"]
  assert set(scanned_shapes["encoder"]) == {remat.SCANNED}
  assert remat.is_scanned(scanned_shapes) and not remat.is_scanned(shapes)
  # the scanned init tree is exactly the stacked unscanned one (abstract leaves too)
  assert jax.tree.map(lambda s: (s.shape, s.dtype), remat.stack_layers(shapes)) == \
      jax.tree.map(lambda s: (s.shape, s.dtype), scanned_shapes)
  params = _random_params(plain, images)
  stacked = remat.stack_layers(params)
  assert stacked["encoder"]["layers"]["layernorm_before"]["scale"].shape == (2, 32)
  np.testing.assert_array_equal(stacked["encoder"]["layers"]["output"]["dense"]["kernel"][1],
                                params["encoder"]["layer_1"]["output"]["dense"]["kernel"])
  jax.tree.map(np.testing.assert_array_equal, remat.unstack_layers(stacked), params)
  jax.tree.map(np.testing.assert_array_equal,
               remat.stack_layers(remat.unstack_layers(stacked)), stacked)
  assert jax.tree.structure(remat.unstack_layers(stacked)) == jax.tree.structure(params)
  with pytest.raises(ValueError, match="layer_0"):
    remat.stack_layers(stacked)
  with pytest.raises(ValueError, match="no encoder/layers"):
    remat.unstack_layers(params)


def test_build_reads_config_and_rejects_unknown_policy():
  cfg = ml_collections.ConfigDict(dict(VIT, attention_impl="einsum"))
  old = vit.build(cfg, jnp.float32)             # an older config without remat / scan
  assert (old.remat, old.scan) == ("none", False)
  cfg.remat, cfg.scan = "dots_saveable", True
  new = vit.build(cfg, jnp.float32)
  assert (new.remat, new.scan) == ("dots_saveable", True)
  text = ml_collections.ConfigDict(dict(BERT, remat="block", scan=True))
  enc = bert.build(text, jnp.float32, use_layers=2)
  assert (enc.remat, enc.scan, enc.layers_run) == ("block", True, 2)
  ids, mask = _text()
  shapes = jax.eval_shape(lambda: enc.init(KEY, ids, mask, train=False))["params"]
  assert shapes["encoder"]["layers"]["attention"]["self"]["query"]["kernel"].shape == (2, 32, 32)
  with pytest.raises(ValueError, match="remat = 'full'"):
    jax.eval_shape(lambda: vit.ViT(**VIT, remat="full").init(KEY, _images(), train=False))
  assert remat.policy("dots_saveable") == (
      True, jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
  assert remat.policy("block") == (True, None) and remat.policy("none") == (False, None)


def test_bert_dropout_runs_scanned_and_rematerialised():
  """Train mode with dropout on (hidden + attention): scan + remat run, the per-layer RNG
  streams are split (deterministic for one key, different for another)."""
  ids, mask = _text()
  model = bert.BertEncoder(**dict(BERT, hidden_dropout=0.1, attention_dropout=0.1),
                           remat="dots_saveable", scan=True)
  params = _random_params(model, ids, mask)
  run = jax.jit(lambda p, k: jax.value_and_grad(lambda p: jnp.sum(model.apply(
      {"params": p}, ids, mask, train=True, rngs={"dropout": k})["hidden"] ** 2))(p), **FAST)
  (a, ga), (b, _), (c, _) = (run(params, jax.random.key(i, impl="rbg")) for i in (0, 0, 1))
  assert np.isfinite(a) and a == b and a != c
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(ga))


# ------------------------------------------------------------------- Hugging Face loaders


def test_bert_loader_with_scan_real_checkpoint():
  transformers = pytest.importorskip("transformers")
  d = minilm_dir()
  cfg = transformers.BertConfig.from_pretrained(d)
  kw = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            intermediate_size=cfg.intermediate_size,
            max_position_embeddings=cfg.max_position_embeddings)
  ids, mask = _text()
  plain, scanned = bert.BertEncoder(**kw), bert.BertEncoder(**kw, scan=True, remat="block")
  abstract = lambda m: jax.eval_shape(lambda: m.init(KEY, ids, mask, train=False))["params"]
  ref = bert.load_pretrained(str(d), abstract(plain))
  got = bert.load_pretrained(str(d), abstract(scanned))
  assert got["encoder"]["layers"]["attention"]["self"]["query"]["kernel"].shape == \
      (cfg.num_hidden_layers, cfg.hidden_size, cfg.hidden_size)
  jax.tree.map(np.testing.assert_array_equal, got, remat.stack_layers(ref))
  jax.tree.map(np.testing.assert_array_equal, remat.unstack_layers(got), ref)


def test_vit_loader_with_scan_matches_hf(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, image_size=32, patch_size=8,
                               layer_norm_eps=1e-6, attn_implementation="eager")
  torch.manual_seed(0)
  hf = transformers.ViTModel(cfg, add_pooling_layer=False).eval()
  hf.save_pretrained(tmp_path)
  images = _images()
  model = vit.ViT(**VIT, scan=True, remat="dots_saveable")
  shapes = jax.eval_shape(lambda: model.init(KEY, images, train=False))["params"]
  params, stats = vit.load_pretrained(str(tmp_path), shapes, {})
  assert stats == {} and remat.is_scanned(params)
  out = jax.jit(lambda p: model.apply({"params": p}, images, train=False), **FAST)(params)
  with torch.no_grad():
    ref = hf(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)),
             output_attentions=True)
  seq = ref.last_hidden_state.numpy()
  np.testing.assert_allclose(out["cls"], seq[:, 0], **TOL)
  np.testing.assert_allclose(out["patch_tokens"], seq[:, 1:], **TOL)
  np.testing.assert_allclose(out["attention"], ref.attentions[-1].numpy(), atol=1e-6)


def test_fused_attention_scanned_returns_cls_row():
  """With a fused attention_impl the scanned BERT carries the [CLS] row `[B, heads, 1, L]`
  (what RECLF reads) and the scanned ViT returns no attention, as unscanned."""
  ids, mask = _text()
  plain = bert.BertEncoder(**BERT)
  fused = bert.BertEncoder(**BERT, attention_impl="xla", scan=True, remat="dots_saveable")
  params = _random_params(plain, ids, mask)
  ref, out = jax.jit(lambda p, q: (plain.apply({"params": p}, ids, mask, train=False),
                                   fused.apply({"params": q}, ids, mask, train=True)), **FAST)(
                                       params, remat.stack_layers(params))
  assert out["attention"].shape == (2, BERT["num_attention_heads"], 1, L)
  np.testing.assert_allclose(out["attention"], ref["attention"][:, :, :1], **TOL)
  np.testing.assert_allclose(out["hidden"], ref["hidden"], **TOL)
  images = _images()
  model = vit.ViT(**VIT, attention_impl="xla", scan=True)
  shapes = jax.eval_shape(lambda: model.init(KEY, images, train=False))
  assert "attention" not in jax.eval_shape(
      lambda v: model.apply(v, images, train=False), shapes)
