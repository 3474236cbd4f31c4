"""The peers through the registry (docs/peers.md): MGCA and ConVIRT recipes and their config
checks, the optimizer's freeze (`train.freeze`: PyTorch's AdamW skipping a parameter without
gradient), and MGCA's train step on the ViT path: `patch_importance`, the prototypes frozen
then normalised at every step, and the whole step on 1 and 8 devices (its losses sharded ==
single device: tests/losses/test_mgca.py, test_convirt.py)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from asg_jax import config as config_lib, objectives, parallel
from asg_jax import state as state_lib
from asg_jax.errors import ConfigError
from asg_jax.models import vlp
from tests.helpers import FakeData, build, demo_config, recipe, run_steps


def test_recipes_ablations_and_checks():
  c = recipe("mgca_vit_b16", None)
  assert c.loss.name == "mgca" and tuple(c.loss.mgca.lambdas) == (1.0, 0.7, 0.5)
  assert (c.train.lr, c.train.weight_decay, c.train.b1, c.train.batch_size,
          c.train.num_epochs, c.train.warmup_frac) == (2e-5, 0.05, 0.9, 144, 50, 0.4)
  assert (c.model.embed_dim, c.model.num_prototypes, c.model.text.use_layers) == (128, 500, 12)
  assert c.model.image.patch_importance and dict(c.train.freeze) == {"prototypes": 0.02}
  assert (c.loss.temperature, c.loss.mgca.local_temperature, c.loss.mgca.proto_temperature,
          c.loss.mgca.epsilon, c.loss.mgca.sinkhorn_iterations) == (0.07, 0.1, 0.2, 0.05, 3)
  v = recipe("convirt_resnet50", None)
  assert (v.loss.name, v.loss.convirt.lam, v.loss.convirt.temperature) == ("convirt", 0.75, 0.1)
  assert v.model.image.name == "resnet50" and not v.model.tag_decoder.enabled
  for row, on in objectives.MGCA_ABLATIONS.items():
    d = demo_config(f"runlocal,objective=mgca,mgca_ablation={row}")
    assert {k: d.loss.mgca[k] for k in on} == on
    assert d.model.num_prototypes == (500 if on["use_proto"] else 0)
    assert not d.model.image.patch_importance       # the demo's ResNet: the CNN path
    assert objectives.needs_local_outputs(d) == on["use_local"]
  assert demo_config("runlocal,objective=mgca,image=vit").model.image.patch_importance
  assert not objectives.needs_local_outputs(demo_config("runlocal,objective=convirt"))
  for arg, overrides, says in [
      ("objective=mgca", {"model.num_prototypes": 0}, "num_prototypes"),
      ("objective=mgca,image=vit", {"model.image.patch_importance": False}, "patch_importance"),
      ("objective=asg", {"model.image.patch_importance": True}, "ViT"),
      ("objective=mgca", {"loss.mgca.use_ita": False, "loss.mgca.use_local": False,
                          "loss.mgca.use_proto": False}, "at least one"),
      ("objective=mgca", {"train.freeze": {"prototypes": 2.0}}, "train.freeze"),
  ]:
    with pytest.raises(ConfigError, match=says):
      config_lib.check_overrides_applied(demo_config(f"runlocal,{arg}", **overrides))
  with pytest.raises(ConfigError, match="mgca_ablation|MGCA ablation"):
    demo_config("runlocal,objective=mgca,mgca_ablation=proto")


def test_freeze_skips_adamw_then_starts_it_fresh_at_the_global_learning_rate():
  """Frozen for 3 of 10 steps: no update, no moments, no weight decay; then an AdamW whose
  bias correction starts at 1 while the schedule is at step 3 (PyTorch's per-parameter
  state); the other subtree is the plain AdamW throughout."""
  cfg = config_lib.base_config().train
  with cfg.unlocked():
    cfg.warmup_frac, cfg.freeze = 0.2, {"prototypes": 0.3}
  tx, schedule = state_lib.make_optimizer(cfg, 10)
  rng = np.random.default_rng(0)
  params = {"prototypes": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
            "other": {"w": jnp.asarray(rng.normal(size=(5,)), jnp.float32)}}
  grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
           for _ in range(10)]
  plain = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay)
  late = optax.adamw(lambda n: schedule(n + 3), b1=cfg.b1, b2=cfg.b2,
                     weight_decay=cfg.weight_decay)
  p, s = params, tx.init(params)
  q, qs = params["other"], plain.init(params["other"])
  r, rs = params["prototypes"], None
  for i, g in enumerate(grads):
    u, s = jax.jit(tx.update)(g, s, p)
    p = optax.apply_updates(p, u)
    uq, qs = plain.update(g["other"], qs, q)
    q = optax.apply_updates(q, uq)
    if i == 2:
      np.testing.assert_array_equal(p["prototypes"], params["prototypes"])
    if i >= 3:
      rs = late.init(r) if rs is None else rs
      ur, rs = late.update(g["prototypes"], rs, r)
      r = optax.apply_updates(r, ur)
  np.testing.assert_allclose(p["other"]["w"], q["w"], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(p["prototypes"], r, rtol=1e-6, atol=1e-7)
  with pytest.raises(ConfigError, match="freeze: 'nope'"):
    bad = config_lib.base_config().train
    with bad.unlocked():
      bad.freeze = {"nope": 0.5}
    state_lib.make_optimizer(bad, 10)[0].init(params)


@pytest.mark.slow
def test_mgca_vit_step_freezes_normalises_and_one_device_equals_eight():
  config = demo_config("runlocal,objective=mgca,image=vit",
                       **{"train.freeze": ml_collections.ConfigDict({"prototypes": 0.2})})
  # 10 steps in the recipe: the prototypes frozen for the first 2; 3 steps on 8 devices
  # and on 1, the prototypes before the first step and after each
  prototypes = {8: [], 1: []}
  runs = {d: run_steps(config, parallel.make_mesh(d), 3, observe=lambda st, d=d: prototypes[d]
                       .append(np.asarray(st.params["prototypes"]))) for d in (8, 1)}
  jitted, state, history = runs[8]
  assert jitted._cache_size() == 1          # pylint: disable=protected-access
  for h1, h8 in zip(runs[1][2], history):
    assert bool(h1["finite"]) and set(h1) == set(h8)
    assert {"ita", "local_word", "local_patch", "proto"} <= set(h8)
    for k in h1:
      np.testing.assert_allclose(h1[k], h8[k], rtol=2e-4, atol=2e-5, err_msg=k)
  # the prototypes moved once (step 3): Adam's first update moves an element whose true
  # gradient is ~0 by up to lr on rounding noise, so every element within 2 lr, and all but
  # a few (measured: 1 of 64,000) within 1e-5
  diff = np.abs(prototypes[1][-1] - prototypes[8][-1])
  assert diff.max() <= 2 * config.train.lr and np.mean(diff > 1e-5) < 1e-3, diff.max()
  # held for two steps (only normalised: the initial ones scaled to unit rows), then moved
  init, held1, held2, released = prototypes[8]
  unit = init / np.linalg.norm(init, axis=1, keepdims=True)
  np.testing.assert_allclose(held1, unit, rtol=1e-6)
  np.testing.assert_allclose(held2, unit, rtol=1e-6)
  assert np.abs(released - unit).max() > 1e-6
  # patch_importance [B, M]: the mean over heads of the [CLS] attention row without its own
  # slot: positive, below 1 in sum; the fused attention's separately computed [CLS] row gives
  # the same weights as the full einsum probabilities
  batch = FakeData(config).example_batch()
  variables = jax.device_get(state.variables)
  outputs = {}
  for impl in ("einsum", "xla"):
    c = demo_config("runlocal,objective=mgca,image=vit", **{"model.image.attention_impl": impl})
    model = vlp.VisionLanguageModel(vlp.frozen_model_config(c))
    outputs[impl] = jax.device_get(jax.jit(
        lambda v, b, m=model: m.apply(v, b, train=False))(variables, batch))
  importance = outputs["einsum"]["patch_importance"]
  m = config.data.image_size // config.model.image.patch_size
  assert importance.shape == (batch["image"].shape[0], m * m)
  assert np.all(importance > 0) and np.all(importance.sum(-1) < 1)
  np.testing.assert_allclose(outputs["xla"]["patch_importance"], importance, rtol=1e-5, atol=1e-6)
  assert outputs["einsum"]["prototypes"].shape == (500, config.model.embed_dim)


def test_other_objectives_have_no_peer_parameters_or_outputs():
  """The peers' additions exist only where their objective reads them (the params tree and
  outputs of ASG / RECLF are as they were)."""
  for arg in ("runlocal,objective=ira,image=vit", "runlocal,objective=reclf"):
    c = demo_config(arg)
    model = vlp.VisionLanguageModel(vlp.frozen_model_config(c))
    out, variables = jax.eval_shape(lambda b, m=model: m.init_with_output(
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)}, b, train=False),
        FakeData(c).example_batch())
    assert "prototypes" not in variables["params"] and "prototypes" not in out
    assert "patch_importance" not in out
