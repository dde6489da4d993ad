"""The interop matrix: other people's clients against every server of their protocol family.

:mod:`experiments.interop.sessions` holds the third-party clients (one connection each),
:mod:`experiments.interop.reader` runs one of them (or a transport's own client) with the
ledger, :mod:`experiments.interop.matrix` judges the cells and draws the table (pure); the
``interop`` scenario (:mod:`experiments.scenarios.interop`) puts them to work.
"""
