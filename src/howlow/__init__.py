"""howlow: how few pixel labels does semantic segmentation need?

Pipeline stages, one module each: data (prepare) -> validate -> oracle -> pseudolabel -> train ->
evaluate -> track (MLflow).
"""

__version__ = "0.1.0"
