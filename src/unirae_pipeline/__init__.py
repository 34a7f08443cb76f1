"""UniRAE: Representation Autoencoders + DiT-DH as a reproducible Kedro + DVC pipeline."""

__version__ = "0.1.0"
