"""Rematerialisation and `nn.scan` of the towers' identical blocks (ViT blocks, BERT layers).

`config.model.{image,text}.remat`:
  "none"          keep every activation for the backward pass (as before);
  "block"         `nn.remat` of each block, no policy: only the block inputs are kept, the
                  whole block is recomputed in the backward pass (least memory, ~1 extra
                  forward of the encoder);
  "dots_saveable" `nn.remat` with `jax.checkpoint_policies.dots_with_no_batch_dims_saveable`:
                  the outputs of the matmuls WITHOUT batch dimensions are kept, i.e. the
                  q/k/v/output and MLP projections (`[B, L, D]`-sized), while everything
                  else is recomputed -- in particular the attention scores / probabilities
                  (`einsum`s with batch dims b, h: the `[B, heads, L, L]` tensors), the
                  softmax, GELU, LayerNorm and dropout. Chosen over plain `dots_saveable`,
                  which would also keep both attention einsums, i.e. the `[B, heads, L, L]`
                  memory this option exists to drop; the recomputation is then only the
                  cheap O(L^2 * D) attention part and the element-wise ops.

`config.model.{image,text}.scan = True` runs the blocks with `nn.scan` (one compiled body,
parameters stacked on a leading layer axis, `split_rngs` for "params" and "dropout"):

    unscanned  encoder/layer_{i}/<block params>      (i = 0 .. L-1)
    scanned    encoder/layers/<block params>          every leaf with a leading axis [L]

`stack_layers` / `unstack_layers` map exactly between the two layouts (the Hugging Face
loaders in `checkpoint_convert` load a scanned tree through the unscanned one). The last
block's attention probabilities are carried through the scan (the carry is `(x, probs)`, each
block overwrites `probs` without reading it), so the scanned towers return the same
`attention` output as the unscanned ones without stacking L layers of probabilities.
Dropout masks differ between the layouts (different per-layer RNG streams); everything else
is equal within float32 rounding (tests/models/test_remat_scan.py).
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

REMAT_OPTIONS = ("none", "block", "dots_saveable")
SCANNED = "layers"                  # name of the scanned module under the encoder
_LAYER = re.compile(r"^layer_(\d+)$")


def policy(name: str) -> tuple[bool, Callable | None]:
  """`remat` option name -> (rematerialise?, `jax.checkpoint` policy or None = save nothing).

  "none" -> (False, None); "block" -> (True, None);
  "dots_saveable" -> (True, jax.checkpoint_policies.dots_with_no_batch_dims_saveable).
  """
  if name == "none":
    return False, None
  if name == "block":
    return True, None
  if name == "dots_saveable":
    return True, jax.checkpoint_policies.dots_with_no_batch_dims_saveable
  raise ValueError(f"remat = {name!r}; expected one of {REMAT_OPTIONS}")


def _carrying(block_cls: type[nn.Module]) -> type[nn.Module]:
  """A subclass of `block_cls` (same fields, same parameter names) with the scan signature
  `(carry=(x, probs), *args) -> ((x', probs'), None)`; the incoming probs are ignored."""

  class Carrying(block_cls):  # pylint: disable=missing-class-docstring
    def __call__(self, carry, *args):  # pylint: disable=arguments-differ
      x, probs = super().__call__(carry[0], *args)
      return (x, probs), None

  Carrying.__name__ = Carrying.__qualname__ = f"Scanned{block_cls.__name__}"
  return Carrying


@functools.lru_cache(maxsize=None)
def layer_stack(block_cls: type[nn.Module], remat: str, scan: bool, num_layers: int,
                num_args: int) -> type[nn.Module]:
  """The module class to build the encoder blocks with.

  Args:
    block_cls: the block; its `__call__(x, *args)` takes `num_args` further POSITIONAL
      arguments, the last one the static boolean `train`, and returns `(x, probs)`.
    remat: one of REMAT_OPTIONS (`policy`).
    scan: False: returns the (possibly rematerialised) block class, called once per layer as
      `cls(..., name=f"layer_{i}")(x, *args)`. True: returns an `nn.scan` over `num_layers`
      blocks, called once as `cls(..., name=SCANNED)((x, probs0), *args)` -> `((x, probs),
      None)`, all args broadcast (loop-invariant); `probs0` only fixes the carry's
      shape/dtype (zeros of the shape of one block's probabilities, or None).
  """
  do_remat, pol = policy(remat)
  cls = _carrying(block_cls) if scan else block_cls
  if do_remat:
    # argnums count `self` as 0 (flax): x / carry is 1, `train` is 1 + num_args
    cls = nn.remat(cls, policy=pol, static_argnums=(1 + num_args,), prevent_cse=not scan)
  if scan:
    cls = nn.scan(cls, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                  in_axes=(nn.broadcast,) * num_args, length=num_layers)
  return cls


# --------------------------------------------------------------- parameter layouts


def _get(tree: Mapping, path: Sequence[str]) -> Mapping:
  for k in path:
    tree = tree[k]
  return tree


def _replace(tree: Mapping, path: Sequence[str], value: Mapping) -> dict:
  if not path:
    return dict(value)
  out = dict(tree)
  out[path[0]] = _replace(tree[path[0]], path[1:], value)
  return out


def _stack_leaves(*xs):
  if isinstance(xs[0], jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct((len(xs),) + tuple(xs[0].shape), xs[0].dtype)
  if all(isinstance(x, np.ndarray) for x in xs):
    return np.stack(xs)
  return jnp.stack(xs)


def _index_leaf(x, i: int):
  if isinstance(x, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(tuple(x.shape[1:]), x.dtype)
  return x[i]


def is_scanned(tree: Mapping, path: Sequence[str] = ("encoder",)) -> bool:
  """Whether the tower tree holds the scanned layout (`<path>/layers`)."""
  try:
    return SCANNED in _get(tree, path)
  except (KeyError, TypeError):
    return False


def stack_layers(tree: Mapping, path: Sequence[str] = ("encoder",)) -> dict:
  """Unscanned -> scanned layout: `<path>/layer_{i}/...` (i = 0..L-1) become
  `<path>/layers/...` with every leaf stacked on a new leading axis [L].

  Works on a ViT / BERT tower's `params` tree (arrays, NumPy arrays or ShapeDtypeStructs);
  `path` names the dict holding the layers. Other keys under `path` are kept.
  """
  node = _get(tree, path)
  idx = sorted(int(m.group(1)) for k in node if (m := _LAYER.match(k)))
  if not idx or idx != list(range(len(idx))):
    raise ValueError(f"stack_layers: expected {'/'.join(path)}/layer_0 .. layer_(L-1), got "
                     f"keys {sorted(node)}")
  if SCANNED in node:
    raise ValueError(f"stack_layers: {'/'.join(path)}/{SCANNED} already exists")
  layers = [node[f"layer_{i}"] for i in idx]
  structure = jax.tree.structure(layers[0])
  for i, layer in enumerate(layers):
    if jax.tree.structure(layer) != structure:
      raise ValueError(f"stack_layers: layer_{i} differs in structure from layer_0")
  stacked = jax.tree.map(_stack_leaves, *layers)
  new = {k: v for k, v in node.items() if not _LAYER.match(k)}
  new[SCANNED] = _plain(stacked)
  return _replace(tree, path, new)


def unstack_layers(tree: Mapping, path: Sequence[str] = ("encoder",)) -> dict:
  """Scanned -> unscanned layout (the inverse of `stack_layers`, exact)."""
  node = _get(tree, path)
  if SCANNED not in node:
    raise ValueError(f"unstack_layers: no {'/'.join(path)}/{SCANNED} in keys {sorted(node)}")
  stacked = node[SCANNED]
  lengths = {int(x.shape[0]) for x in jax.tree.leaves(stacked)}
  if len(lengths) != 1:
    raise ValueError(f"unstack_layers: leaves of {'/'.join(path)}/{SCANNED} have different "
                     f"leading sizes {sorted(lengths)}")
  new = {k: v for k, v in node.items() if k != SCANNED}
  for i in range(lengths.pop()):
    new[f"layer_{i}"] = _plain(jax.tree.map(functools.partial(_index_leaf, i=i), stacked))
  return _replace(tree, path, new)


def _plain(tree: Any) -> Any:
  """Mappings (e.g. FrozenDict) -> dicts, recursively."""
  if isinstance(tree, Mapping):
    return {k: _plain(v) for k, v in tree.items()}
  return tree
