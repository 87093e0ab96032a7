"""Normalizing flows (placeholder until issue 5 lands)."""

from dgm.ui import common

common.placeholder("Normalizing flows", "issue 5", "This page will train its models live; it is being built.")
