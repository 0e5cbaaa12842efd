"""Studies: experiments built from many runs, with their tables and figures.

* :mod:`decent.studies.scaling` - how many machines before it hurts: M* per method and graph
  at fixed sample budgets (``decent scaling``; reduced, ``decent flagship``, the README's
  first command);
* :mod:`decent.studies.thresholds` - M*, penalties and slope fits from a study's table (no
  training); :mod:`decent.studies.scaling_figures` - its figures;
* :mod:`decent.studies.compare` - every method at one network size (``decent compare``).
"""
