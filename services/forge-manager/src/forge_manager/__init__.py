"""cardano-forge-manager: keeps at most one cardano-node of a pool holding forging credentials."""

from importlib import metadata

try:
    __version__ = metadata.version("cardano-forge-manager")
except metadata.PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
