"""Studies: one experiment over a grid of settings and many seeds at a fixed budget, run as tasks on Ray,
kept in an embedded store in the study's folder, and summarised with medians and bootstrap intervals."""
