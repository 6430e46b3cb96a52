"""Experimental speed paths, outside the product: nothing in xwp imports this package.

:mod:`~xwp.experimental.fast_paths` holds ``DenseXWP`` (no ``nonzero``, no host sync: meant for
CUDA graphs), ``CapturedXWP`` (a CUDA graph per shape) and ``CompiledXWP``/``CompiledXWPc``
(``torch.compile`` of the rows' scores). Each equals :class:`xwp.XWP` in float64 (the tests
check it against :mod:`xwp.attribution.reference`), but none is faster where the app and the CLI
run: on this 2-core CPU ``DenseXWP`` wins only at batch 1 (13-15 %), ``CompiledXWP`` only from
batch ~64 (12-24 %) after a ~100 s first compile (docs/performance.md). The GPU paths have not
been measured on a GPU with this code. Use them from Python when a measurement on your machine
says they win.
"""
