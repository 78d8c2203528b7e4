"""Entry-point logic behind the root scripts (``train.py``, ``sample.py``, ``evaluate.py``).

Each task takes a composed Hydra config and does the work, so notebooks can call the same code.
"""
