"""Transfer evaluation: a pre-trained workdir's encoders on the downstream benchmarks
(docs/transfer.md). `config` is the schema recipes import, `run` the runner, `inits` the
encoders compared, `table` the results table; one module per protocol (`linear_probe`,
`fine_tune`, `zeroshot`, `retrieval`, `segmentation`) and their shared parts (`features`,
`classification`, `training`). The command line is `python -m asg_jax.evaluate`."""
