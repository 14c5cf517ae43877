"""Posed datasets in Mega-NeRF's layout, ray chunks on disk."""
