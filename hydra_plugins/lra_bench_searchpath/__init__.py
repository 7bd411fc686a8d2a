"""lra_bench's Hydra search-path plugin (Hydra imports every module under ``hydra_plugins``): see ``searchpath.py``."""
