"""Test set-up: 8 simulated CPU devices, set before JAX initialises."""
import os

os.environ.setdefault("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
# Test programs run a few steps each: compiling them without LLVM backend optimisation
# takes ~20 % less CPU time in all (the same XLA graph optimisations run; only the machine
# code is less tuned). Comparisons are within the suite (1 vs 8 devices, resume vs
# uninterrupted, against NumPy / PyTorch references with tolerances), so they hold the same.
# ASG_JAX_TEST_OPTIMIZED=1 runs the suite on fully optimised code.
# The same for XLA:CPU's MLIR fusion emitters: the classic LLVM IR emitters compile the
# same fused computations in ~35 % less time (compile 44.8 -> 27.2 s over
# test_precision_and_feed + losses/test_reclf; every check passes either way).
if os.environ.get("ASG_JAX_TEST_OPTIMIZED") != "1":
  if "--xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
  if "--xla_cpu_use_fusion_emitters" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# A per-run persistent XLA cache: the train-loop tests compile the same steps several times
# (kill + resume, the inference fixture, the NaN guard); identical programs then load.
import tempfile  # noqa: E402
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:   # the run's own (xdist workers inherit it)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = OWN_CACHE = tempfile.mkdtemp(prefix="asg_jax_xla_")
else:
  OWN_CACHE = None
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REALDATA = SHARED / "realdata"
REFERENCE = SHARED / "reference"


@pytest.fixture(scope="session")
def realdata_dir():
  """../shared/realdata, or skip with a clear message."""
  if not REALDATA.is_dir():
    pytest.skip(f"real-data fixtures not found at {REALDATA} (the shared/ folder beside the repo)")
  return REALDATA


@pytest.fixture(scope="session")
def reference_dir():
  if not REFERENCE.is_dir():
    pytest.skip(f"reference folder not found at {REFERENCE}")
  return REFERENCE


@pytest.fixture(scope="session")
def tiny_pretrained():
  """A random-init `inference.Pretrained` of the demo's runlocal architecture (fake
  tokenizer): what the transfer tests evaluate (no training needed)."""
  import jax  # pylint: disable=import-outside-toplevel
  from asg_jax import inference  # pylint: disable=import-outside-toplevel
  from asg_jax.models import tag_queries  # pylint: disable=import-outside-toplevel
  from tests.helpers import FakeTokenizer, demo_config  # pylint: disable=import-outside-toplevel
  config = demo_config("runlocal")
  tok = FakeTokenizer(config.model.text.vocab_size, config.data.max_length)
  constants = tag_queries.make_constants(config, tok, jax.random.PRNGKey(1))
  p = inference.Pretrained(config, {"params": {}, "batch_stats": {}}, tok, constants)
  p.variables = p.random_variables(7)
  return p


# The README runs the suite on two worker processes, a test FILE per worker at a time
# (`-n 2 --dist loadfile`: module fixtures are built once). Files are handed out in
# collection order, so the longest ones go first and the two workers finish together.
LONGEST_FIRST = ("tests/test_main_job_devices.py", "tests/test_crash_consistency.py",
                 "tests/test_data_lineage.py", "tests/test_cli_errors.py",
                 "tests/test_workdir_lock.py", "tests/test_train.py", "tests/test_train_devices.py",
                 "tests/test_notebooks.py", "tests/test_own_data.py",
                 "tests/data/test_downstream_builders.py", "tests/test_precision_and_feed.py",
                 "tests/test_inference.py", "tests/test_visualize.py",
                 "tests/transfer/test_segmentation.py", "tests/models/test_remat_scan.py",
                 "tests/transfer/test_fine_tune.py", "tests/transfer/test_transfer.py",
                 "tests/transfer/test_linear_probe.py")


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

  def key(item):
    path = pathlib.Path(str(item.fspath)).resolve().relative_to(REPO).as_posix()
    return rank.get(path, len(rank))
  items.sort(key=key)   # stable: the order within a file and among the rest is kept


def pytest_configure(config):
  """PyPI's torchvision for torch 2.13 (a test-only dependency, for timm and the ResNet-50
  layout) is a CUDA build whose ops library does not load against the CPU torch wheel, and
  `import torchvision` then fails — also inside transformers, which imports it for its model
  classes. `torch_zoo.import_torchvision` makes the pure-Python part importable, once per
  test process, before any test imports transformers."""
  del config
  import importlib.util  # pylint: disable=import-outside-toplevel
  if importlib.util.find_spec("torchvision") is not None:
    from tests.models import torch_zoo  # pylint: disable=import-outside-toplevel
    torch_zoo.import_torchvision()


def pytest_unconfigure(config):
  """The run's XLA cache goes with it (the process that made it removes it; ~60 MB a run)."""
  del config
  if OWN_CACHE is not None:
    import shutil  # pylint: disable=import-outside-toplevel
    shutil.rmtree(OWN_CACHE, ignore_errors=True)
