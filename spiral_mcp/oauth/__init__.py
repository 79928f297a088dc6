"""OAuth 2.1 resource server: verifying the access tokens clients present.

Domain level: it knows settings and HTTP client calls to authorization servers, never the
server or protocol packages.
"""

from .claims import TokenRefused, VerifiedToken
from .tokens import TokenVerifier

__all__ = ["TokenRefused", "TokenVerifier", "VerifiedToken"]
