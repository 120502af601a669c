"""Benchmarks of the suite, run from the repository root as modules: ``python -m benchmarks.<name>`` (each file's
docstring gives its command). They write their figures under ``results/benchmarks/`` of the checkout, so they are not
part of the installed package; ``tests/benchmarks/`` runs every mode at tiny sizes."""
