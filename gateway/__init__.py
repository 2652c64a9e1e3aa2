"""The WebSocket gateway: relays a voice-agent conversation and runs backend-owned function calls on workers."""
