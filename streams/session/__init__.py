"""The transport-neutral session core that the WebSocket consumer and the SSE views share."""
