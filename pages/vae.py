"""VAE (placeholder until issue 6 lands)."""

from dgm.ui import common

common.placeholder("VAE", "issue 6", "This page will train its models live; it is being built.")
