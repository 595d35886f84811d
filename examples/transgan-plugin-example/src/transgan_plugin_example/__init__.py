"""transgan plugin example: a small translator network and a symmetric least-squares GAN loss."""

__version__ = "0.1.0"
