"""DGM Explorer's backend: deep generative models on 2D toy data and 8x8 digits, in PyTorch.

Everything outside ``dgm.ui`` works without Streamlit (scripts, notebooks, the CLI, tests).
This package file stays free of heavy imports: app.py must reach ``st.navigation`` within
milliseconds of a server start (see app.py).
"""

__version__ = "0.1.0"

from dgm.core import kernels as _kernels

# before torch runs its first op: the CPU kernels a seed's numbers depend on (see dgm/core/kernels.py)
_kernels.pin()
