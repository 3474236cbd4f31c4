"""Public, jittable loss functions (see docs/interfaces.md and docs/asg.md)."""
from asg_jax.losses.contrastive import ira_loss

__all__ = ["ira_loss"]
from asg_jax.losses.reclf import (gloria_local_loss, reclf_objective,  # noqa: E402
                                  semantic_contrastive_loss, semantic_similarity,
                                  semantic_soft_targets)
from asg_jax.models.local_matching import (gloria_local_similarity,  # noqa: E402
                                           local_matching_scores, pairwise_local_similarity,
                                           reclf_local_similarity)

__all__ += ["gloria_local_loss", "gloria_local_similarity", "local_matching_scores",
            "pairwise_local_similarity", "reclf_local_similarity", "reclf_objective",
            "semantic_contrastive_loss", "semantic_similarity", "semantic_soft_targets"]
from asg_jax.losses.asg import (arsa_loss, asg_objective, region_features,  # noqa: E402
                                sentence_features, tag_bce_loss)
from asg_jax.losses.contrastive import (contrastive_terms, soft_label_loss,  # noqa: E402
                                        soft_targets)
from asg_jax.losses.roi_align import roi_align  # noqa: E402

__all__ += ["arsa_loss", "asg_objective", "contrastive_terms", "region_features", "roi_align",
            "sentence_features", "soft_label_loss", "soft_targets", "tag_bce_loss"]
from asg_jax.losses.convirt import convirt_loss, convirt_objective  # noqa: E402
from asg_jax.losses.mgca import (mgca_local_loss, mgca_objective,  # noqa: E402
                                 mgca_patch_weights, mgca_prototype_loss, mgca_word_weights,
                                 sinkhorn_knopp)

__all__ += ["convirt_loss", "convirt_objective", "mgca_local_loss", "mgca_objective",
            "mgca_patch_weights", "mgca_prototype_loss", "mgca_word_weights", "sinkhorn_knopp"]
