"""Preemption: SIGTERM (what Kubernetes, Slurm and TPU/GPU VM maintenance send) or SIGINT
(Ctrl-C) during training -> the current step finishes, a checkpoint of it is written, and
`train_and_evaluate` raises `Preempted`; `python -m asg_jax.main` then exits with
`EXIT_CODE` (75, EX_TEMPFAIL: "try again"), and rerunning the same command continues from
that step exactly (the checkpoint holds the step, the optimizer, the data position and the
early-stopping state).

    with preemption.Guard() as guard:
      for step in ...:
        ... one step ...
        if guard.requested:
          save; raise preemption.Preempted(step, guard.signal_name, directory)

A second signal while the checkpoint is written gets the default behaviour (a second
Ctrl-C kills at once). Handlers are installed only in the main thread (Python's rule; a
loop run from another thread is not guarded) and the previous ones are restored on exit.
"""
from __future__ import annotations

import signal
import threading

EXIT_CODE = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(RuntimeError):
  """Training stopped on a signal after checkpointing `step` in `directory`."""

  def __init__(self, step: int, signal_name: str, directory: str):
    super().__init__(f"{signal_name} received: stopped after step {step}, checkpointed in "
                     f"{directory}; rerun the same command to continue from there")
    self.step, self.signal_name, self.directory = step, signal_name, directory


class Guard:
  """Context manager: `requested` turns True once SIGTERM / SIGINT arrives."""

  def __init__(self, signals=SIGNALS):
    self._signals = tuple(signals)
    self._previous: dict[int, object] = {}
    self.signal_name = ""

  @property
  def requested(self) -> bool:
    return bool(self.signal_name)

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name
    print(f"{self.signal_name} received: finishing the current step and writing a "
          f"checkpoint (send it again to stop at once)", flush=True)
    for s in self._signals:   # a second signal: the default behaviour
      signal.signal(s, self._previous.get(s, signal.SIG_DFL))

  def __enter__(self) -> "Guard":
    if threading.current_thread() is threading.main_thread():
      for s in self._signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()
