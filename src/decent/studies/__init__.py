"""Studies: experiments built from many runs, with their tables and figures.

* :mod:`decent.studies.flagship` - what decentralization costs each method on a sparse graph
  (``decent flagship``, the README's first command).
"""
