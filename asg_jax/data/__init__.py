"""The data: raw files → stored examples (tfds) → host batches, and the demo data.

    data = asg_jax.data.prepare(config, workdir)   # generate, build, learn the vocabulary
    data.train_batches(start_step)                 # then only read (a DataSource)
    data.eval_batches()

  preparation.py   `prepare(config, workdir, bound_tokenizer=)`: the explicit step that
                   leaves the data ready, then the `DataSource` over it
  pipeline/        the tf.data input path: `InputSpec`, `DataSource`, source → stream →
                   host (interfaces.md §2), the downstream splits, a random batch
  builders/        the tfds builders (interfaces.md §1, §1b) and the fingerprinted build
                   (`build.py`)
  reports/         report understanding (sections, cleaning, tags, CheXpert / NIH-14,
                   regions; the labelling CLI `python -m asg_jax.data.reports`) and the
                   WordPiece tokenizer (`tokenization.py`)
  demo/            the generated demo data: `synthetic.py` (MIMIC-CXR layout, CLI
                   `python -m asg_jax.data.demo.synthetic`), its report text and drawing,
                   the downstream stand-ins (`python -m asg_jax.data.demo.downstream`),
                   and the owned-folder rule of the generator (`owned_dir.py`)
  geometry.py      resize / pad / crop of an image with its boxes (TF ops; the pipeline and
                   the figures)
  normalization.py the pixel normalisation (host NumPy and device JAX, one lookup table;
                   geometry and the models use it)

Importing `asg_jax.data` (or any of its light modules) loads no TensorFlow: `prepare` does.
"""
from asg_jax.data.preparation import prepare

__all__ = ["prepare"]
