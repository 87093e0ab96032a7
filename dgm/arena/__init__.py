"""The arena: every registered family on the same data, measured side by side (a floor above the families)."""
