"""The floor every model family stands on: kernels and devices, knobs and configs, the trainer
contract, data sets, metrics, the experiment registry, shared figure pieces, worker processes,
exports and the command line. Nothing here imports a family or Streamlit (docs/ARCHITECTURE.md)."""
