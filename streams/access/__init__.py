"""Who may use the streams and how much: API keys, origins, client addresses, quotas, request checks."""
