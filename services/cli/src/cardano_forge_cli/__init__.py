"""cardano-forge: the operator's command line for a pool's forge managers."""

from importlib import metadata

try:
    __version__ = metadata.version("cardano-forge-cli")
except metadata.PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
