"""spiral-mcp: a multi-tenant Model Context Protocol server for work-item data and safe SQL."""

__version__ = "0.1.0"
__all__ = ["__version__"]
