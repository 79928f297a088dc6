"""OAuth 2.1 resource server: verifying the access tokens clients present (``tokens``), mapping
a verified token to its tenant and principal (``identity``, through the operator's issuer
``bindings``), and what the server tells clients about itself (``challenges``: the protected
resource metadata and the WWW-Authenticate challenges); and the web console's client of one
issuer (``authorization``: the authorization code flow with PKCE).

Domain level: it knows settings, the database and HTTP client calls to authorization servers,
never the server or protocol packages.
"""

from .claims import TokenRefused, VerifiedToken
from .tokens import TokenVerifier

__all__ = ["TokenRefused", "TokenVerifier", "VerifiedToken"]
