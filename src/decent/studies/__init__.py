"""Studies: experiments built from many runs, with their tables and figures.

Every study is a spec, a grid of cells and its figures on one kit
(:mod:`decent.studies._kit`: the tuning loop, spec loading, final rows, labels and styles
from the algorithm classes) and one figure module (:mod:`decent.studies.figures`: the panels
every study figure is made of, and the scaling figures of the thresholds tables):

* :mod:`decent.studies.scaling` - how many machines before it hurts: M* per method and graph
  at fixed sample budgets (``decent scaling``; reduced, ``decent flagship``, the README's
  first command);
* :mod:`decent.studies.thresholds` - M*, penalties and slope fits from a study's table (no
  training);
* :mod:`decent.studies.compare` - every method at one network size (``decent compare``);
* :mod:`decent.studies.network` - time to target under stragglers, drops and churn
  (``decent network``);
* :mod:`decent.studies.robustness` - compression, privacy and Byzantine nodes
  (``decent robustness``).
"""
