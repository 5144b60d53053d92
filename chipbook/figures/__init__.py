"""Figure functions: each ``plot_…(**params)`` is pure and returns a matplotlib Figure, so that the
notebook's static figure and its explorable's frames come from the same code."""
