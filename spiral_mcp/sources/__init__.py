"""Sources: mirror work items from Jira (later GitHub and Asana) into the store.

``secrets`` keeps credentials encrypted at rest, ``base`` is the adapter interface and its polite
HTTP client, ``jira`` the Jira Cloud adapter, ``sync`` the incremental, resumable sync and
``manage`` the operator's commands behind ``spiral-mcp source``.
"""
