"""The Streamlit layer shared by the pages: the only part of ``dgm`` that imports streamlit.

- ``common``: page setup, the shared sidebar (device, seed, presenter mode), notes;
- ``controls``: widgets generated from a config's knobs, bound to URL parameters, and presets;
- ``live``: the Play / Pause / Step / Reset loop that trains in short bursts and redraws.
"""
