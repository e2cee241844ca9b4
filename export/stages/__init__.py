"""The export stages, in order. Each module has ``enabled(ctx)`` and ``run(ctx)``; some also ``check(ctx)``
(validation before any slow step) and ``STEPS``/``steps(ctx)`` (how many progress steps it logs)."""
