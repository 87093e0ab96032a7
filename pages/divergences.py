"""Divergences (placeholder until issue 3 lands)."""

from dgm.ui import common

common.placeholder("Divergences", "issue 3", "This page will train its models live; it is being built.")
