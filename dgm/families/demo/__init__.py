"""The live-loop demonstration: a full-covariance Gaussian fitted by maximum likelihood."""
