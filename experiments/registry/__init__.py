"""The results registry: committed runs in a compact format (``results/<study>/<run>/``).

    python -m experiments.registry.register RUN[=NAME] ... --study results/<study>   # put finished runs in
    python -m experiments.registry.migrate [results]                                # older layouts to the format

``register`` checks every metric against the run's full matrix before writing the compact files; ``migrate``
rewrites runs registered in an older layout. The format itself (read by the report and the tables too) is
``experiments/results/registry_format.py``.
"""
