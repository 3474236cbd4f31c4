"""Figures of a trained workdir: grounding heat maps, retrieval panels, t-SNE, training curves.

    python -m asg_jax.visualize --workdir workdir/demo            # -> workdir/demo/figures/*.png
    python -m asg_jax.visualize --workdir W --images a.png b.jpg --phrases "pleural effusion"

    from asg_jax import visualize
    paths = visualize.write_figures("workdir/demo")               # {"grounding": ".../grounding.png", ...}

The figures themselves are drawn by `asg_jax.figures` (one module per kind; docs/figures.md
shows them on the demo):

- `grounding.png` (`figures.grounding`) — where a phrase is grounded: for examples of the
  evaluation split with region boxes of their own (not the atlas), the word–patch and
  region–sentence similarity maps on the ORIGINAL image; with `--images`, one row per image
  and one map per phrase. Without examples with boxes of their own the figure is skipped
  with a one-line reason.
- `retrieval.png` (`figures.retrieval`) — report → top-5 images and image → top-5 reports.
- `tsne.png` (`figures.tsne`) — t-SNE of the global image and report embeddings by class.
- `curves.png` (`figures.curves`) — the workdir's TensorBoard scalars.
"""
from __future__ import annotations

import argparse
import os
from typing import Mapping, Sequence

from asg_jax.figures import curves, drawing, examples as examples_lib, grounding, retrieval, tsne

FIGURES_DIR = "figures"
FIGURE_NAMES = ("grounding", "retrieval", "tsne", "curves")
DEFAULT_PHRASES = ("pleural effusion", "cardiomegaly", "pneumothorax")


def write_figures(workdir: str, out: str | None = None, *, images: Sequence[str] = (),
                  phrases: Sequence[str] = (), split: str | None = None,
                  max_examples: int = 200, model=None, examples: Sequence[Mapping] | None = None,
                  log=print) -> dict[str, str]:
  """Writes the figures of `workdir` into `out` (default `<workdir>/figures`).

  Args:
    images: image files (PNG / JPEG / DICOM) for the grounding figure, with `phrases`
      (default `DEFAULT_PHRASES`); without them it shows examples of the split.
    split: the split of the workdir's dataset (default `config.data.eval_split`).
    max_examples: how many of its first examples retrieval and t-SNE use.
    model: a `Pretrained` (default: loaded from the workdir's best checkpoint).
    examples: stored examples (default `examples_lib.load_examples(workdir, ...)`).
    log: where the one-line notes go (figures skipped and why).
  Returns:
    {figure name: PNG path} of the figures written.
  """
  out = out or os.path.join(workdir, FIGURES_DIR)
  written: dict[str, str] = {}

  def save(name: str, fig):
    written[name] = drawing.save(fig, os.path.join(out, f"{name}.png"))

  from asg_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  summary = workdir_lib.read_summary(workdir) or {}
  scalars = curves.read_scalars(workdir)
  if scalars:
    save("curves", curves.curves_figure(scalars, summary.get("chance")))
  else:
    log(f"curves: no TensorBoard events in {workdir}")
  if model is None:
    from asg_jax import inference  # pylint: disable=import-outside-toplevel
    model = inference.Pretrained.from_workdir(workdir)
  if examples is None:
    try:
      examples = examples_lib.load_examples(workdir, model.config, split, max_examples)
    except (FileNotFoundError, ValueError) as e:
      log(f"retrieval, t-SNE{'' if images else ', grounding'}: no stored examples ({e})")
      examples = []
  examples = list(examples)[:max_examples]
  encoded = examples_lib.encode_examples(model, examples) if examples else None
  if images:
    loaded = [examples_lib.read_image(p) for p in images]
    save("grounding", grounding.phrase_figure(model, loaded, phrases or DEFAULT_PHRASES,
                                              [os.path.basename(p) for p in images]))
  elif examples:
    try:
      save("grounding", grounding.grounding_figure(model, examples, encoded))
    except ValueError as e:
      log(f"grounding: {e}")
  if examples and len(examples) >= 2:
    save("retrieval", retrieval.retrieval_figure(examples, encoded))
  if examples and len(examples) >= 3:
    save("tsne", tsne.tsne_figure(examples, encoded))
  return written


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
  parser = argparse.ArgumentParser(
      prog="python -m asg_jax.visualize",
      description="Write the figures of a trained workdir (grounding heat maps, retrieval "
                  "panels, t-SNE, training curves) as PNG files.")
  parser.add_argument("--workdir", required=True, help="a training workdir")
  parser.add_argument("--images", nargs="*", default=(), help="image files for the grounding "
                      "figure (default: examples of the split)")
  parser.add_argument("--phrases", nargs="*", default=(),
                      help=f"phrases to ground on --images (default {list(DEFAULT_PHRASES)})")
  parser.add_argument("--out", default=None, help="output folder (default <workdir>/figures)")
  parser.add_argument("--split", default=None, help="split of the workdir's dataset "
                      "(default config.data.eval_split)")
  parser.add_argument("--max_examples", type=int, default=200)
  parser.add_argument("--verbosity", type=int, default=None,
                      help="show library log lines (absl levels: 0 = INFO)")
  args = parser.parse_args(argv)
  from asg_jax import console  # pylint: disable=import-outside-toplevel
  console.configure(verbose=args.verbosity is not None)
  with console.quiet_native_stderr(args.verbosity is None):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.set_visible_devices([], "GPU")
  written = write_figures(args.workdir, args.out, images=args.images, phrases=args.phrases,
                          split=args.split, max_examples=args.max_examples)
  for name in FIGURE_NAMES:
    if name in written:
      print(f"{name:10s} {written[name]}")
  return written


if __name__ == "__main__":
  main()
