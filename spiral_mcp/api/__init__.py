"""The admin API (``/api/v1``): tenant admins manage their tenant, operators the installation.
The application is built by :func:`spiral_mcp.api.app.api_application`."""
