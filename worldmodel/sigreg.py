"""SIGReg: Sketched Isotropic Gaussian Regularisation (LeJEPA / LeWorldModel).

Pushes a batch of embeddings towards an isotropic standard Gaussian by testing
many random 1-D projections of it with the Epps-Pulley statistic: the squared
distance between the empirical characteristic function of the projected samples
and that of N(0, 1), exp(-t^2 / 2), integrated against a Gaussian window. A
collapsed (constant or low-rank) embedding scores high; N(0, I) scores ~0.

The module lives in ``worldmodel.regularizers`` (with VICReg, VISReg and temporal
straightening, and the multi-process synchronisation); it is re-exported here.
"""

from worldmodel.regularizers import SIGReg

__all__ = ["SIGReg"]
