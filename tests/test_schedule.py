"""ASG's per-step learning-rate schedule, hand-derived values."""
import math

import numpy as np

from asg_jax import config as config_lib
from asg_jax.state import lr_schedule


def test_warmup_then_cosine_to_end_lr():
  c = config_lib.base_config().train
  sched = lr_schedule(c, 1000)          # warmup 400 steps, then 600 cosine steps
  np.testing.assert_allclose(sched(0), 1e-8, rtol=1e-5)
  np.testing.assert_allclose(sched(200), 1e-8 + 0.5 * (4e-5 - 1e-8), rtol=1e-5)
  np.testing.assert_allclose(sched(400), 4e-5, rtol=1e-5)
  # halfway through the cosine: end + (peak - end) * (1 + cos(pi/2)) / 2
  np.testing.assert_allclose(sched(700), 1e-8 + (4e-5 - 1e-8) * 0.5, rtol=1e-4)
  np.testing.assert_allclose(sched(1000), 1e-8, rtol=1e-3)
  mid = 400 + 150
  want = 1e-8 + (4e-5 - 1e-8) * 0.5 * (1 + math.cos(math.pi * 150 / 600))
  np.testing.assert_allclose(sched(mid), want, rtol=1e-4)
