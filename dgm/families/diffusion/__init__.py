"""Diffusion models and flow matching: DDPM, denoising score matching and flow matching, their learned scores
and velocities compared with the exact ones of noised Gaussian mixtures."""
