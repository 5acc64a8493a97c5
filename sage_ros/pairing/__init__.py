"""Pairing thermal with RGB: in time (`sync`, for streams) and by file name (`datasets`, for folders)."""
