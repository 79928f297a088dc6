"""OAuth 2.1 resource server: access tokens verified, and mapped to a tenant and a principal."""
