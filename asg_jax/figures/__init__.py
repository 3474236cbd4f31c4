"""The figures of a trained workdir, one module per kind (docs/figures.md).

- `examples`: the stored examples the figures draw and their model outputs; the finding
  class of a CheXpert row; image files for `--images`.
- `drawing`: the matplotlib helpers (Agg canvas, object API) and the outcome colours.
- `grounding`: patch-grid maps on the original image, `grounding.png` (phrase grounding of
  the split's regions) and the phrase maps of given images.
- `retrieval`: `retrieval.png` (report -> images, image -> reports).
- `tsne`: `tsne.png` (t-SNE of the global embeddings).
- `curves`: `curves.png` (the workdir's TensorBoard scalars).

`asg_jax.visualize` writes them all (`write_figures`, `python -m asg_jax.visualize`).
"""
