"""asg_jax.cpu_allocator: on a CPU-only machine the CLI re-executes itself once with glibc's
huge-page tunable (XLA's per-step buffers then fault 2 MiB pages, not 4 KiB ones)."""
import os
import pathlib
import subprocess
import sys

from asg_jax import cpu_allocator

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_wanted_environment_adds_the_tunable_once_and_only_on_cpu():
  env = cpu_allocator.wanted_environment({"PATH": "/bin"}, has_accelerator=False)
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1" and env["PATH"] == "/bin"
  kept = cpu_allocator.wanted_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
                                          has_accelerator=False)
  assert kept["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  assert cpu_allocator.wanted_environment(env, has_accelerator=False) is None   # done once
  assert cpu_allocator.wanted_environment({}, has_accelerator=True) is None
  assert cpu_allocator.wanted_environment({"ASG_JAX_ALLOCATOR": "0"},
                                          has_accelerator=False) is None
  assert cpu_allocator.wanted_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},
                                          has_accelerator=False) is None   # the user's choice


def test_accelerator_detection(tmp_path):
  (tmp_path / "dev").mkdir()
  assert not cpu_allocator.has_accelerator({}, str(tmp_path))
  (tmp_path / "dev" / "nvidia0").touch()
  assert cpu_allocator.has_accelerator({}, str(tmp_path))
  assert not cpu_allocator.has_accelerator({"JAX_PLATFORMS": "cpu"}, str(tmp_path))
  assert cpu_allocator.has_accelerator({"JAX_PLATFORMS": "cuda,cpu"}, "/nonexistent")


def test_a_script_is_replaced_by_itself_with_the_tunable(tmp_path):
  script = tmp_path / "s.py"
  script.write_text(
      "import os, sys\nsys.path.insert(0, %r)\nfrom asg_jax import cpu_allocator\n"
      "print('start', flush=True)\ncpu_allocator.reexec_with_tunables()\n"
      "print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])\n" % str(REPO))
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "ASG_JAX_ALLOCATOR")}
  env["JAX_PLATFORMS"] = "cpu"
  out = subprocess.run([sys.executable, str(script), "a", "--b=1"], env=env, text=True,
                       capture_output=True, check=True).stdout.splitlines()
  assert out == ["start", "start", "glibc.malloc.hugetlb=1 ['a', '--b=1']"]
