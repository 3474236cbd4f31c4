"""PyTorch checkpoint files read without executing pickled code (and without torch).

`torch.save` writes a zip archive: `<name>/data.pkl` (a pickle of the saved object) and one
raw byte record per tensor storage (`<name>/data/<key>`). The pickle is read here by a
restricted unpickler that admits only

    tensors                 torch._utils._rebuild_tensor_v2 / _rebuild_parameter* over the
                            storages (torch.FloatStorage, HalfStorage, BFloat16Storage, ...):
                            rebuilt as NumPy arrays straight from the archive's bytes
    plain containers        dict, list, tuple, set, frozenset, collections.OrderedDict,
                            bytes (`_codecs.encode`), torch.Size (a tuple), torch dtypes (str)
    plain-data wrappers     Lightning's AttributeDict and argparse.Namespace: read as dicts

Every other global the pickle names (a class, a function) is NOT imported or called: it is
replaced by an inert `Foreign` record naming it. Where such records end up decides:

    under `state_dict` / the tensors  -> `UnsafeCheckpointError` naming what was wanted and
                                         where ("refusing to execute pickled code")
    Lightning's hyper_parameters,     -> skipped: the value becomes the string
    callbacks, loops, optimizer          "<not loaded: module.Name>" (`skipped` lists them)
    states, ... (metadata)

Files that are not zip archives (`torch.save(..., _use_new_zipfile_serialization=False)`,
PyTorch < 1.6) are read by `torch.load(weights_only=True)` when torch is installed.
bfloat16 tensors are returned as float32 (NumPy has no bfloat16).
"""
from __future__ import annotations

import _compat_pickle
import dataclasses
import io
import pickle
import zipfile
from typing import Any, Mapping

import numpy as np

# storage class name (torch.<Name>) -> NumPy dtype of its elements
_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "UntypedStorage": np.uint8,
}
_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
           "uint8", "bool", "float", "double", "half", "long", "int", "short")
# Lightning / argparse classes whose pickles are plain data: read as dicts
_PLAIN_DICTS = {("argparse", "Namespace")} | {
    (m, "AttributeDict") for m in ("pytorch_lightning.utilities.parsing",
                                    "lightning.pytorch.utilities.parsing",
                                    "lightning_fabric.utilities.data",
                                    "lightning.fabric.utilities.data")}
# top-level keys of a Lightning checkpoint that hold no weights of the model
METADATA_KEYS = ("hyper_parameters", "hparams", "callbacks", "loops", "optimizer_states",
                 "lr_schedulers", "hparams_name", "pytorch-lightning_version", "epoch",
                 "global_step", "datamodule_hyper_parameters", "args", "cfg", "config",
                 "optimizer", "scheduler", "scaler", "amp")


class UnsafeCheckpointError(ValueError):
  """The checkpoint's weights need arbitrary pickled objects (never loaded)."""


class Foreign:
  """An object of a class the reader does not admit: a subclass per wanted global carries
  its `name`; nothing of the real class is imported, constructed or called."""
  name = "?"

  def __new__(cls, *args, **kwargs):       # NEWOBJ
    del args, kwargs
    return object.__new__(cls)

  def __init__(self, *args, **kwargs):     # REDUCE: the wanted callable "called"
    del args, kwargs

  def __setitem__(self, key, value):       # SETITEM(S) of a dict subclass
    self.__dict__.setdefault("items", {})[key] = value

  def append(self, value):                 # APPEND(S) of a list subclass
    items = self.__dict__.setdefault("items", {})
    items[len(items)] = value

  def extend(self, values):
    for v in values:
      self.append(v)

  def __setstate__(self, state):           # BUILD
    self.__dict__["state"] = state

  def __repr__(self):
    return f"<not loaded: {self.name}>"


@dataclasses.dataclass(frozen=True)
class _Storage:
  dtype: Any


class _OrderedDict(dict):
  """collections.OrderedDict as a dict; its BUILD state (a state dict's `_metadata`, module
  versions) is dropped."""

  def __setstate__(self, state):
    del state


class _PlainDict(dict):
  """argparse.Namespace / AttributeDict rebuilt as a dict."""

  def __setstate__(self, state):
    if isinstance(state, tuple) and len(state) == 2:   # (__dict__, __slots__ state)
      state = {**(state[0] or {}), **(state[1] or {})}
    if isinstance(state, Mapping):
      self.update(state)


def _rebuild_tensor(storage, offset, size, stride, *_):
  """`torch._utils._rebuild_tensor_v2` on a NumPy storage (elements, not bytes)."""
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  if not size:
    return np.array(storage[offset])
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                         strides=tuple(s * storage.itemsize for s in stride))
  return np.array(view)


def _rebuild_parameter(data, *_):
  return data


def _encode(text, encoding="latin1"):     # protocol-2 bytes: _codecs.encode(str, "latin1")
  return text.encode(encoding)


class _Unpickler(pickle.Unpickler):
  """The restricted unpickler of the module docstring over one zip archive."""

  def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, big_endian: bool):
    super().__init__(io.BytesIO(data))
    self._archive, self._prefix, self._big = archive, prefix, big_endian
    self._storages: dict[str, np.ndarray] = {}
    self._foreign: dict[str, type] = {}

  def find_class(self, module: str, name: str):
    if (module, name) in _compat_pickle.NAME_MAPPING:   # protocol 2: Python 2 names
      module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    if module == "builtins" and name in ("dict", "list", "tuple", "set", "frozenset", "int",
                                         "float", "complex", "bool", "str", "bytes",
                                         "bytearray"):
      return {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset,
              "int": int, "float": float, "complex": complex, "bool": bool, "str": str,
              "bytes": bytes, "bytearray": bytearray}[name]
    if (module, name) == ("collections", "OrderedDict"):
      return _OrderedDict
    if (module, name) == ("_codecs", "encode"):
      return _encode
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return _rebuild_tensor
    if module == "torch._utils" and name in ("_rebuild_parameter",
                                             "_rebuild_parameter_with_state"):
      return _rebuild_parameter
    if module == "torch" and name in _STORAGES:
      return _Storage(_STORAGES[name])
    if module == "torch" and name == "Size":
      return tuple
    if module == "torch" and name in _DTYPES:
      return f"torch.{name}"
    if (module, name) in _PLAIN_DICTS:
      return _PlainDict
    wanted = f"{module}.{name}"
    if wanted not in self._foreign:
      self._foreign[wanted] = type("Foreign", (Foreign,), {"name": wanted})
    return self._foreign[wanted]

  def persistent_load(self, pid):
    """('storage', storage type, key, location, numel) -> the storage as a 1-D array."""
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    kind, key = pid[1], str(pid[2])
    if key not in self._storages:
      if not isinstance(kind, _Storage):
        raise UnsafeCheckpointError(f"storage of unsupported type {kind!r}")
      raw = self._archive.read(f"{self._prefix}data/{key}")
      if kind.dtype == "bfloat16":   # the upper 16 bits of a float32
        bits = np.frombuffer(raw, ">u2" if self._big else "<u2").astype(np.uint32) << 16
        self._storages[key] = bits.view(np.float32)
      else:
        dtype = np.dtype(kind.dtype).newbyteorder(">" if self._big else "<")
        self._storages[key] = np.frombuffer(raw, dtype).astype(np.dtype(kind.dtype))
    return self._storages[key]


def read(path: str) -> Any:
  """The object `torch.save` wrote to `path`, tensors as NumPy arrays, foreign objects as
  `Foreign` records (see `clean`). Raises ValueError for a file that is no PyTorch pickle."""
  if not zipfile.is_zipfile(path):
    return _read_legacy(path)
  with zipfile.ZipFile(path) as archive:
    names = [n for n in archive.namelist() if n.endswith("data.pkl")]
    if not names:
      raise ValueError(f"{path}: a zip archive without data.pkl (not a torch.save file)")
    prefix = names[0][:-len("data.pkl")]
    order = f"{prefix}byteorder"
    big = order in archive.namelist() and archive.read(order).strip() == b"big"
    return _Unpickler(archive.read(names[0]), archive, prefix, big).load()


def _read_legacy(path: str) -> Any:
  """A pre-zip torch file, through `torch.load(weights_only=True)` (needs torch)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ValueError(f"{path}: not a zip-format PyTorch checkpoint; reading an old-format "
                     f"file needs torch (pip install torch)") from e
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    lines = str(e).splitlines() or [""]
    wanted = next((ln.strip() for ln in lines if "GLOBAL" in ln), lines[0])
    raise UnsafeCheckpointError(f"{path}: refusing to execute pickled code: {wanted}") from e
  except (RuntimeError, EOFError) as e:
    raise ValueError(f"{path}: not a PyTorch checkpoint ({e})") from e

  def numpy(x):
    if isinstance(x, torch.Tensor):
      x = x.detach().cpu()
      return (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    if isinstance(x, Mapping):
      return {k: numpy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
      return type(x)(numpy(v) for v in x)
    return x
  return numpy(obj)


def _foreign(obj: Any) -> str | None:
  """The wanted name when `obj` is a `Foreign` record (or a bare foreign class), else None."""
  if isinstance(obj, Foreign) or (isinstance(obj, type) and issubclass(obj, Foreign)):
    return obj.name
  return None


def foreign_paths(obj: Any, path: str = "") -> list[tuple[str, str]]:
  """(where, class name) of every `Foreign` record inside `obj`."""
  if _foreign(obj):
    return [(path or "(the file)", _foreign(obj))]
  if isinstance(obj, Mapping):
    return [f for k, v in obj.items() for f in foreign_paths(v, f"{path}[{k!r}]")]
  if isinstance(obj, (list, tuple, set, frozenset)):
    return [f for i, v in enumerate(obj) for f in foreign_paths(v, f"{path}[{i}]")]
  return []


def _skip(obj: Any) -> Any:
  """`obj` with every `Foreign` record replaced by "<not loaded: name>"."""
  if _foreign(obj):
    return f"<not loaded: {_foreign(obj)}>"
  if isinstance(obj, Mapping):
    return {k: _skip(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_skip(v) for v in obj)
  return obj


@dataclasses.dataclass
class Checkpoint:
  """A read checkpoint: `tensors` (flat name -> array: the state dict), `metadata` (the
  other top-level entries, plain data), `skipped` ((where, class) of what was not loaded)."""
  tensors: dict[str, np.ndarray]
  metadata: dict
  skipped: list[tuple[str, str]]


def load(path: str) -> Checkpoint:
  """Reads a PyTorch weight file: a plain state dict, a Lightning checkpoint
  (`{"state_dict": ..., "hyper_parameters": ...}`), a timm / DeiT release (`{"model": ...}`)
  or a `{"state_dict_ema" / "module" / "model_state_dict": ...}` wrapper.

  Raises:
    UnsafeCheckpointError: the tensors (or the file's top level) need arbitrary objects.
    ValueError: no state dict of tensors in the file.
  """
  obj = read(path)
  if _foreign(obj):
    raise UnsafeCheckpointError(f"{path}: refusing to execute pickled code: the file is a "
                                f"pickled {_foreign(obj)}, not a state dict of tensors")
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path}: expected a state dict (a mapping of tensors), got "
                     f"{type(obj).__name__}")
  key = next((k for k in ("state_dict", "model", "model_state_dict", "module",
                          "state_dict_ema") if isinstance(obj.get(k), Mapping)), None)
  state = obj[key] if key is not None else {k: v for k, v in obj.items()
                                           if k not in METADATA_KEYS}
  where = f"[{key!r}]" if key is not None else ""
  bad = foreign_paths(state, where)
  if bad:
    shown = "; ".join(f"{name} at {p}" for p, name in bad[:5])
    raise UnsafeCheckpointError(
        f"{path}: refusing to execute pickled code: the weights need {len(bad)} arbitrary "
        f"Python object(s) ({shown}{' ...' if len(bad) > 5 else ''}); only tensors and plain "
        f"containers are read. Re-save the tensors alone, e.g. torch.save({{k: v for k, v in "
        f"sd.items() if torch.is_tensor(v)}}, 'weights.pt')")
  tensors = {k: v for k, v in _flatten(state).items() if isinstance(v, np.ndarray)}
  if not tensors:
    raise ValueError(f"{path}: no tensors found (top-level keys: {sorted(map(str, obj))[:10]})")
  metadata = {k: v for k, v in obj.items() if k != key and (key is not None or
                                                             k in METADATA_KEYS)}
  skipped = foreign_paths(metadata)
  return Checkpoint(tensors, _skip(metadata), skipped)


def _flatten(state: Mapping, prefix: str = "") -> dict:
  """Nested dicts of tensors (e.g. `{"encoder": {...}}`) -> dotted names."""
  out = {}
  for k, v in state.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out
