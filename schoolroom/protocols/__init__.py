"""Interaction protocols: one file each, over typed agent handles."""
