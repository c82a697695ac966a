"""portaudit: audit the kernel settings and socket state behind failed client connections."""

__version__ = "0.1.0"
