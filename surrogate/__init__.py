"""surrogate: electron-microscopy image -> atomic configurations."""

__version__ = "0.1.0"
