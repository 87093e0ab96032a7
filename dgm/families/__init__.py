"""The model families, one package each, all of the same shape (docs/ARCHITECTURE.md):

    model.py     the maths and the torch modules (no config, no figures)
    trainer.py   the config dataclass (its knobs) and the Trainer
    figures.py   what the page draws: snapshots of a trainer turned into plotly figures
    lessons.py   the page text, the lessons (presets with what they teach) and the Experiment record

Arrows point down only: lessons -> figures -> trainer -> model -> dgm.core. The registry
(dgm.core.registry) finds each family's ``lessons.EXPERIMENT`` by name.
"""
