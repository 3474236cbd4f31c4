"""Public, jittable loss functions (see docs/interfaces.md and docs/asg.md)."""
from asg_jax.losses.contrastive import ira_loss

__all__ = ["ira_loss"]
