"""The bottom layer: what a study, a cell and a stage *are*, as pure pydantic (no torch).

``registry`` (model sizes), ``units`` (counts like 2B), ``train`` (TrainConfig), ``presets``,
``evals`` (evaluation configs), ``compute`` (FLOPs pricing), ``categories`` (the paper's
benchmark categories and aggregation) and ``cell`` (``CellSpec``, the one reader and writer of
cell.json). Everything above imports from here; this package imports nothing above it.
"""
