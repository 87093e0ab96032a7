"""Autoregressive models: an exact likelihood as a product of one-dimensional conditionals, and slow sampling."""
