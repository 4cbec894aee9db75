"""IBN-Net training, evaluation, conversion and export on MindSpore 2.x (Python 3.9+).

Nothing in ``ibnedge`` imports this package at module import time.
"""
