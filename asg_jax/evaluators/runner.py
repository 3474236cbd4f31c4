"""Validation: one pass over the eval split, then every configured evaluator.

Per-batch work that needs the local features (grounding) runs inside the jitted eval step
(`per_example_outputs`), so only small per-example arrays come back to the host.

Evaluators (`config.eval.evaluators`):
  retrieval  image→text / text→image top-1/5/10 over the whole split (duplicate-aware)
  zeroshot   per-finding AUROC: prompt-based ("<finding>" vs "no <finding>" report
             embeddings, `zs_prompt_auroc`) and, with the IRL decoder, its tag logits
             (`zs_tag_auroc`); macro over the tags with both classes in the split
  grounding  pointing game of region–sentence similarity maps vs the true region boxes
             (only examples whose boxes are their own, `boxes_annotated`: absent when the
             split has none, never scored against atlas priors)
"""
from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asg_jax import parallel
from asg_jax.evaluators import grounding, metrics


def per_example_outputs(outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array],
                        config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Inside jit: the small per-example arrays the evaluators need."""
  from asg_jax import losses, objectives  # pylint: disable=import-outside-toplevel
  out = {"image_emb": outputs["image_emb"], "text_emb": outputs["text_emb"],
         "tags": batch["tags"], "input_ids": batch["input_ids"]}
  if "tag_logits" in outputs:
    out["tag_logits"] = outputs["tag_logits"]
  if "grounding" in config.eval.evaluators and "region_word_index" in batch:
    sentences = losses.sentence_features(outputs["word_emb"], batch["region_word_index"])
    # only boxes that are the image's own anatomy, never atlas priors
    mask = batch["region_mask"]
    if "boxes_annotated" in batch:
      mask = mask & batch["boxes_annotated"][:, None]
    g = grounding.pointing_game(outputs["patch_emb"], sentences, batch["region_boxes"],
                                mask, objectives.patch_grid(config), config.data.image_size)
    out.update({f"grounding_{k}": v for k, v in g.items()})
  return out


def evaluate(state, *, eval_step: Callable, data, constants, mesh,
             config: ml_collections.ConfigDict, embed_prompts: Callable | None = None) -> dict:
  """Runs the eval split through `eval_step` and computes every configured metric.

  Validation losses are exact per-example means over the whole split: every batch's loss
  terms are means over its examples (the contrastive terms over the batch's own pairs), and
  they are averaged weighted by the batch's number of real examples. A partial last batch is
  evaluated at its real size (its padding rows are dropped before the step, so they enter
  no softmax; one more compilation of the eval step for that shape), so any non-empty split
  gives `val_loss`.

  Returns:
    {"metrics": {name: value}, "chance": {name: chance-level value}, "num_examples": N}
  """
  collected: dict[str, list[np.ndarray]] = {}
  losses_sum: dict[str, float] = {}
  n_loss_examples = 0
  for host_batch in data.eval_batches():
    valid = np.asarray(host_batch.get("valid", np.ones(len(host_batch["image"]), bool)))
    n_valid = int(valid.sum())
    if n_valid == 0:   # all-padding batch (other processes have more examples)
      continue
    inputs = {k: v for k, v in host_batch.items() if k != "valid"}
    if n_valid == len(valid):
      batch = parallel.shard_batch(inputs, mesh)
    else:   # the real rows only, unsharded (dense losses over exactly these pairs)
      batch = {k: np.asarray(v)[valid] for k, v in inputs.items()}
    per_example, batch_measurements = jax.device_get(eval_step(state, batch, constants))
    for k, v in batch_measurements.items():
      losses_sum[k] = losses_sum.get(k, 0.0) + float(v) * n_valid
    n_loss_examples += n_valid
    rows = valid if n_valid == len(valid) else slice(None)
    for k, v in per_example.items():
      collected.setdefault(k, []).append(np.asarray(v)[rows])
  if not collected:
    raise ValueError(f"the evaluation split {config.data.eval_split!r} has no example")
  arrays = {k: np.concatenate(v) for k, v in collected.items()}
  n = len(arrays["image_emb"])
  result_metrics, chance = {}, {}
  for k, v in losses_sum.items():
    if k in ("finite",) or k.startswith(("i2t_", "t2i_", "top")):
      continue
    result_metrics["val_loss" if k == "loss" else f"val_{k}"] = v / n_loss_examples

  evaluators = tuple(config.eval.evaluators)
  if "retrieval" in evaluators:
    sim = arrays["image_emb"] @ arrays["text_emb"].T
    _, groups = np.unique(arrays["input_ids"], axis=0, return_inverse=True)
    m, c = metrics.retrieval_at_k(sim, groups.reshape(-1))
    result_metrics.update(m)
    chance.update(c)
  if "zeroshot" in evaluators:
    m = zero_shot(arrays, embed_prompts)
    result_metrics.update(m)
    chance.update({k: 0.5 for k in m if k.endswith("auroc")})
  if "grounding" in evaluators and "grounding_mask" in arrays:
    mask = arrays["grounding_mask"]
    if mask.sum() > 0:
      result_metrics["grounding_acc"] = float(arrays["grounding_hit"].sum() / mask.sum())
      chance["grounding_acc"] = float(arrays["grounding_chance"].sum() / mask.sum())
  return {"metrics": result_metrics, "chance": chance, "num_examples": int(n)}


def zero_shot(arrays: Mapping[str, np.ndarray], embed_prompts: Callable | None) -> dict:
  """Per-tag AUROC (positive = tag present, 1; negative = absent or not mentioned), macro
  over the tags that have both classes in the split."""
  from asg_jax.objectives import tag_phrases  # pylint: disable=import-outside-toplevel
  labels = arrays["tags"] == 1
  usable = [t for t in range(labels.shape[1]) if 0 < labels[:, t].sum() < len(labels)]
  out = {}
  if not usable:
    return out
  if embed_prompts is not None:
    phrases = tag_phrases()
    prompts = [phrases[t] for t in usable] + [f"no {phrases[t]}" for t in usable]
    emb = np.asarray(embed_prompts(prompts))
    pos, neg = emb[:len(usable)], emb[len(usable):]
    scores = arrays["image_emb"] @ pos.T - arrays["image_emb"] @ neg.T
    per_tag = [metrics.auroc(scores[:, j], labels[:, t]) for j, t in enumerate(usable)]
    out["zs_prompt_auroc"] = float(np.nanmean(per_tag))
  if "tag_logits" in arrays:
    per_tag = [metrics.auroc(arrays["tag_logits"][:, t], labels[:, t]) for t in usable]
    out["zs_tag_auroc"] = float(np.nanmean(per_tag))
  out["zs_num_tags"] = float(len(usable))
  return out


def make_prompt_embedder(model, tokenizer) -> Callable:
  """`embed(state)(prompts) -> [P, E]` report embeddings of free-text prompts."""
  encode = jax.jit(lambda variables, ids, mask, wids: model.apply(
      variables, ids, mask, wids, train=False, method="encode_text")["text_emb"])

  def bind(state):
    variables = {"params": state.params, "batch_stats": state.batch_stats}

    def embed(prompts):
      tokens = tokenizer.encode_batch(list(prompts))
      return encode(variables, jnp.asarray(tokens["input_ids"]),
                    jnp.asarray(tokens["attention_mask"]), jnp.asarray(tokens["word_ids"]))
    return embed
  return bind
