"""The Colab notebooks (colab/*.ipynb) run top to bottom on CPU in their tiny setting.

Executed by nbclient (kernel "python3" = this interpreter, the venv; one kernel, its namespace
reset before each notebook) with `ASG_JAX_NOTEBOOK_TINY=1` (2 training steps on 40 studies,
on the suite's 8 simulated devices: a many-device host as a Colab TPU gives, pre-training and
transfer), `ASG_JAX_NOTEBOOK_INSTALL=0` (no Colab install) and
`ASG_JAX_WORKDIR`: pretrain.ipynb trains into the workdir that explore.ipynb and
transfer.ipynb then read. Checked: every code cell ran in order without error; the numbers,
tables and figures they show are the workdir's own. The committed notebooks carry the outputs
of a real run (the full demo). colab/install.py's accelerator detection and pip command are
checked without installing anything.
"""
import base64
import importlib.util
import io
import json
import os
import pathlib
import re
import sys

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
COLAB = REPO / "colab"
ORDER = ("pretrain", "explore", "transfer")   # pretrain writes the workdir the others read
CELL_TIMEOUT_S = 600                          # a cold XLA cache compiles the train step (~3 min)
FIGURES = {"pretrain": ["curves"], "explore": ["phrases", "grounding", "retrieval", "tsne"],
           "transfer": ["transfer_probe"]}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
  """(workdir, {name: executed notebook}) of the three notebooks, run in ORDER.

  One kernel runs them one after the other, its namespace cleared (`%reset -f`) before each:
  every notebook runs top to bottom with nothing of the one before it but the imported
  modules (which saves a kernel start and the TF / JAX imports per notebook)."""
  workdir = tmp_path_factory.mktemp("notebooks") / "workdir"
  env = dict(os.environ, ASG_JAX_NOTEBOOK_TINY="1", ASG_JAX_NOTEBOOK_INSTALL="0",
             ASG_JAX_WORKDIR=str(workdir), ASG_JAX_PROGRESS="0")
  client = NotebookClient(nbformat.v4.new_notebook(), timeout=CELL_TIMEOUT_S,
                          kernel_name="python3", resources={"metadata": {"path": str(COLAB)}})
  out = {}
  with client.setup_kernel(env=env):
    for name in ORDER:
      client.nb = nb = nbformat.read(COLAB / f"{name}.ipynb", as_version=4)
      client.reset_execution_trackers()
      client.execute_cell(nbformat.v4.new_code_cell("%reset -f"), 0, store_history=False)
      client.reset_execution_trackers()
      for index, cell in enumerate(nb.cells):
        client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
      out[name] = nb
  return workdir, out


def outputs(nb, kind=None):
  for cell in nb.cells:
    if cell.cell_type == "code":
      for o in cell.outputs:
        if kind is None or o.output_type == kind:
          yield o


def text_of(nb) -> str:
  return "".join(o.get("text", "") for o in outputs(nb, "stream"))


def markdown_outputs(nb) -> list[str]:
  return [o.data["text/markdown"] for o in outputs(nb, "display_data")
          if "text/markdown" in o.data]


def png_outputs(nb) -> list[np.ndarray]:
  """RGB arrays of the PNG images a notebook displayed."""
  out = []
  for o in outputs(nb, "display_data"):
    if "image/png" in o.data:
      with Image.open(io.BytesIO(base64.b64decode(o.data["image/png"]))) as im:
        assert im.format == "PNG"
        out.append(np.asarray(im.convert("RGB"), np.float64))
  return out


def assert_ran_cleanly(nb):
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert [c.execution_count for c in code] == list(range(1, len(code) + 1))  # top to bottom
  assert not list(outputs(nb, "error"))
  assert "Traceback" not in text_of(nb)


def assert_figures(nb, workdir, names):
  images = png_outputs(nb)
  assert len(images) == len(names)
  for rgb in images:
    assert rgb.shape[0] > 150 and rgb.shape[1] > 200 and rgb.mean(-1).std() > 10   # not blank
  for name in names:
    with Image.open(workdir / "figures" / "notebook" / f"{name}.png") as im:
      assert im.format == "PNG"


def table(markdown: str) -> list[list[str]]:
  """The body rows of a markdown table, as stripped cells."""
  lines = [ln for ln in markdown.strip().splitlines() if ln.startswith("|")]
  return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


@pytest.mark.slow
def test_pretrain_notebook_trains_into_the_workdir_and_shows_its_metrics(executed):
  workdir, nbs = executed
  nb = nbs["pretrain"]
  assert_ran_cleanly(nb)
  printed = text_of(nb)
  assert f"python {sys.executable}\n" in printed          # the kernel is this venv's python
  assert "step 2/2" in printed and "cloning" not in printed.lower()
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["steps"] == 2
  assert summary["devices"].startswith("8 x")       # every device of the (simulated) host
  (shown,) = markdown_outputs(nb)
  rows = {r[0]: r[1:] for r in table(shown)}
  assert set(rows) == set(summary["metrics"])
  for name, value in summary["metrics"].items():
    assert float(rows[name][0]) == pytest.approx(value, abs=5e-5)
  assert_figures(nb, workdir, FIGURES["pretrain"])


@pytest.mark.slow
def test_explore_notebook_answers_zero_shot_and_draws_the_figures(executed):
  workdir, nbs = executed
  nb = nbs["explore"]
  assert_ran_cleanly(nb)
  assert "24 examples" in text_of(nb)
  (shown,) = markdown_outputs(nb)
  header = [c.strip() for c in shown.splitlines()[0].strip("|").split("|")]
  assert header[1:] == [f"{n} (prompt / tags)" for n in
                        ("pleural effusion", "cardiomegaly", "pneumothorax", "no finding")]
  rows = table(shown)
  assert len(rows) == 8                                   # one row per film
  for row in rows:
    prompt, tags = np.array([[float(x) for x in c.split("/")] for c in row[1:]]).T
    assert prompt.sum() == pytest.approx(1.0, abs=0.03)    # softmax over the classes (2 digits)
    assert ((tags > 0) & (tags < 1)).all()                 # one sigmoid per class
  assert_figures(nb, workdir, FIGURES["explore"])


@pytest.mark.slow
def test_transfer_notebook_shows_the_results_it_wrote(executed):
  from asg_jax.transfer import table
  workdir, nbs = executed
  nb = nbs["transfer"]
  assert_ran_cleanly(nb)
  results = json.loads((workdir / "transfer" / table.RESULTS_JSON).read_text())
  assert {r["init"] for r in results["rows"]} == {"pretrained", "random"}
  (shown,) = markdown_outputs(nb)
  assert shown == table.format_table(results["rows"])
  assert (workdir / "transfer" / table.RESULTS_MD).is_file()
  assert_figures(nb, workdir, FIGURES["transfer"])


@pytest.mark.parametrize("name", ORDER)
def test_committed_notebooks_carry_the_outputs_of_a_run(name):
  path = COLAB / f"{name}.ipynb"
  assert path.stat().st_size < 2_000_000
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  assert_ran_cleanly(nb)
  assert len(png_outputs(nb)) == len(FIGURES[name])
  assert nb.metadata.kernelspec.name == "python3"


# ----------------------------------------------------------------------------- colab/install.py
def install_module():
  spec = importlib.util.spec_from_file_location("colab_install", COLAB / "install.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("files,env,expected", [
    ([], {}, "cpu"),
    (["dev/accel0"], {}, "tpu"),                 # TPU v4 and later
    (["dev/vfio/0"], {}, "tpu"),                 # TPU v2 / v3 VM
    (["dev/nvidia0"], {}, "gpu"),
    (["dev/nvidia0", "dev/vfio/0"], {}, "gpu"),  # a GPU passed through vfio is still a GPU
    ([], {"COLAB_GPU": "1"}, "gpu"),
    ([], {"COLAB_TPU_1VM": "1"}, "tpu"),
])
def test_install_detects_the_accelerator(tmp_path, files, env, expected):
  for f in files:
    (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / f).touch()
  assert install_module().detect_accelerator(env, str(tmp_path)) == expected


def test_install_pins_the_jax_build_of_the_accelerator():
  install = install_module()
  pinned = re.search(r"^jax==(\S+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)
  for accelerator, jax in (("tpu", "jax[tpu]"), ("gpu", "jax[cuda12]"), ("cpu", "jax")):
    cmd = install.pip_command(accelerator, str(REPO), "python")
    assert cmd[:4] == ["python", "-m", "pip", "install"]
    assert cmd[-1] == f"{jax}=={pinned}"
    assert ["-c", str(REPO / "constraints.txt")] == cmd[5:7] and ["-e", str(REPO)] == cmd[7:9]
  with pytest.raises(ValueError, match="accelerator='rocm'"):
    install.pip_command("rocm")
