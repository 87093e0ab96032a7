"""Latent variables without an encoder (the density network) and discrete latents (Gumbel-softmax, VQ-VAE)."""
