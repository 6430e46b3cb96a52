"""Benchmarks and evidence scripts, run from the checkout's root as modules: ``python -m bench.speed``.

Each script writes a Markdown report (``docs/results/...``) with the command that made it. The
bench may import ``tests.support`` (the shared model and server helpers); tests never import the bench.
"""
