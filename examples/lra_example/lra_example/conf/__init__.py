# Hydra reads pkg://lra_example.conf through importlib.resources: the folder must be a package (this file).
