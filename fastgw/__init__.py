"""fastgw: a fast API gateway with JWT authentication."""

__version__ = "0.1.0"
