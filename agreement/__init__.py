"""Django-free statistics of the crowd annotation: words, aggregation, agreement, verification, plots.

Nothing here imports Django or the rest of unitscope, so the statistics can be tested against
reference libraries on plain records and reused by scripts, workers and reports alike.
"""
