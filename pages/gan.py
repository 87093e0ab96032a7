"""GAN dynamics (placeholder until issue 4 lands)."""

from dgm.ui import common

common.placeholder("GAN dynamics", "issue 4", "This page will train its models live; it is being built.")
